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
(function () {
  // Tables that follow the event log: on each change (debounced), the page is fetched again and
  // the live region swapped for the fresh one. Without JavaScript a reload does the same.
  var live = document.querySelector("[data-live]");
  if (!live || !window.EventSource || !window.fetch || !window.DOMParser) { return; }
  var source = new EventSource(live.dataset.live);
  var pending = null;
  source.addEventListener("change", function () {
    if (pending) { return; }
    pending = setTimeout(function () {
      pending = null;
      fetch(window.location.href, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) { return; }
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(live.id);
          if (fresh) { live.innerHTML = fresh.innerHTML; }
        })
        .catch(function () {});
    }, 200);
  });
})();
