//! Splitting a step's output into log lines in bounded memory: whatever a step prints (gigabytes
//! with no newline included), a line holds at most [`MAX_LINE`] bytes; the rest of a longer line
//! is counted and dropped, never buffered, and the line says it was cut.

use std::borrow::Cow;

/// The longest line kept, in bytes: 16 KiB, the length at which Docker's json-file driver and
/// Kubernetes' CRI log format split lines, so a line reads the same here as in `kubectl logs`. It
/// holds any line a person reads (a stack frame, a minified error message) and keeps the memory
/// of a build's output to a few such buffers.
pub const MAX_LINE: usize = 16 * 1024;

/// Appended to a line that was cut.
pub const CUT_MARKER: &str = " [line cut: longer than 16 KiB, the rest of it is not logged]";

/// Turns chunks of output into lines of at most [`MAX_LINE`] bytes (plus [`CUT_MARKER`] when
/// cut), invalid UTF-8 replaced, line ends (`\n`, `\r\n`) removed.
#[derive(Debug, Default)]
pub struct LineSplitter {
    /// The line so far (at most [`MAX_LINE`] bytes).
    line: Vec<u8>,
    /// Set once the current line was cut: its bytes are dropped until its newline.
    cut: bool,
}

impl LineSplitter {
    /// Feeds a chunk of output; `emit` gets each line as soon as it is complete or cut.
    pub fn feed(&mut self, mut chunk: &[u8], mut emit: impl FnMut(&str)) {
        while !chunk.is_empty() {
            let (part, ends_line) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let part = &chunk[..i];
                    chunk = &chunk[i + 1..];
                    (part, true)
                }
                None => (std::mem::take(&mut chunk), false),
            };
            if !self.cut {
                let room = MAX_LINE - self.line.len();
                if part.len() <= room {
                    self.line.extend_from_slice(part);
                } else {
                    self.line.extend_from_slice(&part[..room]);
                    emit(&cut_text(&self.line));
                    self.line.clear();
                    self.cut = true;
                }
            }
            if ends_line {
                if !self.cut {
                    emit(&whole_text(&self.line));
                }
                self.line.clear();
                self.cut = false;
            }
        }
    }

    /// Ends the output: a last line without a newline is emitted.
    pub fn finish(self, mut emit: impl FnMut(&str)) {
        if !self.cut && !self.line.is_empty() {
            emit(&whole_text(&self.line));
        }
    }
}

fn whole_text(line: &[u8]) -> Cow<'_, str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line)
}

/// The kept part of a cut line, ending at a character boundary, with the marker.
fn cut_text(line: &[u8]) -> String {
    let keep = match std::str::from_utf8(line) {
        // A character split by the cut: keep what comes before it.
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        _ => line.len(),
    };
    format!("{}{CUT_MARKER}", String::from_utf8_lossy(&line[..keep]))
}

/// Cuts `text` to at most `max` bytes (at a character boundary) with [`CUT_MARKER`]: for lines
/// that do not come through a [`LineSplitter`] (those a runner sends).
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{CUT_MARKER}", &text[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut lines = Vec::new();
        let mut splitter = LineSplitter::default();
        for chunk in chunks {
            splitter.feed(chunk, |l| lines.push(l.to_owned()));
        }
        splitter.finish(|l| lines.push(l.to_owned()));
        lines
    }

    #[test]
    fn lines_are_split_across_chunks_and_line_ends_removed() {
        assert_eq!(
            split(&[b"one\r\ntw", b"o\n\nthr", b"ee"]),
            ["one", "two", "", "three"]
        );
        assert_eq!(split(&[b"a\n"]), ["a"]);
        assert!(split(&[b""]).is_empty());
    }

    #[test]
    fn a_long_line_is_cut_with_a_marker_and_the_rest_dropped() {
        let long = vec![b'a'; MAX_LINE * 3 + 5];
        let lines = split(&[&long[..1000], &long[1000..], b"\nnext\n"]);
        assert_eq!(
            lines.len(),
            2,
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(lines[0], format!("{}{CUT_MARKER}", "a".repeat(MAX_LINE)));
        assert_eq!(lines[1], "next");
        // Exactly MAX_LINE bytes is not cut.
        let exact = vec![b'b'; MAX_LINE];
        assert_eq!(
            split(&[&exact, b"\n"]),
            [String::from_utf8(exact).expect("ascii")]
        );
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let mut line = vec![b'a'; MAX_LINE - 1];
        line.extend_from_slice("é and more".as_bytes());
        let lines = split(&[&line]);
        assert_eq!(
            lines[0],
            format!("{}{CUT_MARKER}", "a".repeat(MAX_LINE - 1))
        );
        let text = format!("{}é", "a".repeat(9));
        assert_eq!(cut(&text, 10), format!("{}{CUT_MARKER}", "a".repeat(9)));
        assert_eq!(cut("short", 10), "short");
    }
}
