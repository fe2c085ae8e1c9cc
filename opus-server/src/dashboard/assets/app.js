// Opus dashboard: the live parts. Everything else works without JavaScript.
"use strict";
(function () {
  // A running build's log: Server-Sent Events from where the page's log ends. Each event is one
  // line, already escaped and coloured by opusd; `end` carries the final state.
  var log = document.getElementById("log");
  if (log && log.dataset.stream) {
    var source = new EventSource(log.dataset.stream);
    source.addEventListener("line", function (e) {
      var atEnd = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
      log.insertAdjacentHTML("beforeend", e.data + "\n");
      if (atEnd) { window.scrollTo(0, document.body.scrollHeight); }
    });
    source.addEventListener("end", function (e) {
      source.close();
      var state = document.getElementById("state");
      if (state) {
        state.textContent = e.data;
        state.className = "state state-" + e.data;
      }
      var live = document.getElementById("live");
      if (live) { live.textContent = "The build has ended: reload for its timings."; }
    });
  }
})();
