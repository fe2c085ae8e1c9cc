//! A log line as HTML: its text escaped, its ANSI colours (SGR: bold, dim, underline, the 16
//! colours as foreground and background, 256-colour codes within those 16) as `<span>`s with
//! classes of the stylesheet, every other escape sequence and control character dropped.

use std::fmt::Write;

/// Appends `text` to `out`, HTML-escaped.
pub(super) fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// The styles in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    bold: bool,
    dim: bool,
    underline: bool,
    fg: Option<u8>,
    bg: Option<u8>,
}

impl Style {
    /// Applies one SGR sequence's parameters (`1;31`).
    fn apply(&mut self, params: &str) {
        let mut codes = params.split(';').map(|p| {
            if p.is_empty() {
                0
            } else {
                p.parse::<u16>().unwrap_or(u16::MAX)
            }
        });
        while let Some(code) = codes.next() {
            match code {
                0 => *self = Style::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                4 => self.underline = true,
                22 => (self.bold, self.dim) = (false, false),
                24 => self.underline = false,
                30..=37 => self.fg = Some((code - 30) as u8),
                90..=97 => self.fg = Some((code - 90 + 8) as u8),
                39 => self.fg = None,
                40..=47 => self.bg = Some((code - 40) as u8),
                100..=107 => self.bg = Some((code - 100) as u8),
                49 => self.bg = None,
                38 | 48 => {
                    // 38;5;n (256 colours: the first 16 kept) or 38;2;r;g;b (dropped).
                    let colour = match codes.next() {
                        Some(5) => codes.next().filter(|n| *n < 16).map(|n| n as u8),
                        Some(2) => {
                            codes.next();
                            codes.next();
                            codes.next();
                            None
                        }
                        _ => None,
                    };
                    if code == 38 {
                        self.fg = colour;
                    } else {
                        self.bg = colour.map(|c| c % 8);
                    }
                }
                _ => {}
            }
        }
    }

    /// The classes of a `<span>` in this style; empty for the default.
    fn classes(&self) -> String {
        let mut out = String::new();
        let mut add = |c: &str| {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(c);
        };
        if self.bold {
            add("a-b");
        }
        if self.dim {
            add("a-d");
        }
        if self.underline {
            add("a-u");
        }
        if let Some(f) = self.fg {
            add(&format!("f{f}"));
        }
        if let Some(g) = self.bg {
            add(&format!("g{g}"));
        }
        out
    }
}

/// Appends `text` as HTML: escaped, coloured spans for its SGR sequences. The spans it opens are
/// closed at its end (each line starts in the default style, as the CLI's lines do on a
/// terminal that resets).
pub(super) fn to_html(out: &mut String, text: &str) {
    let mut style = Style::default();
    let mut open = false;
    let mut chars = text.char_indices().peekable();
    let mut plain_start = 0;
    let flush = |out: &mut String, from: usize, to: usize| escape_into(out, &text[from..to]);
    while let Some((i, c)) = chars.next() {
        if c != '\x1b' && (!c.is_control() || c == '\t') {
            continue;
        }
        flush(out, plain_start, i);
        let mut end = i + c.len_utf8();
        if c == '\x1b' {
            match chars.peek().map(|&(_, n)| n) {
                Some('[') => {
                    chars.next();
                    end += 1;
                    let params_start = end;
                    let mut final_byte = None;
                    for (j, n) in chars.by_ref() {
                        end = j + n.len_utf8();
                        if ('\x40'..='\x7e').contains(&n) {
                            final_byte = Some((j, n));
                            break;
                        }
                    }
                    if let Some((j, 'm')) = final_byte {
                        let before = style;
                        style.apply(&text[params_start..j]);
                        if style != before {
                            if open {
                                out.push_str("</span>");
                                open = false;
                            }
                            let classes = style.classes();
                            if !classes.is_empty() {
                                let _ = write!(out, "<span class=\"{classes}\">");
                                open = true;
                            }
                        }
                    }
                }
                Some(n) => {
                    // ESC, intermediate bytes (` ` to `/`, as in `ESC ( B`), one final byte.
                    chars.next();
                    end += n.len_utf8();
                    if (' '..='/').contains(&n) {
                        while let Some(&(j, m)) = chars.peek() {
                            chars.next();
                            end = j + m.len_utf8();
                            if !(' '..='/').contains(&m) {
                                break;
                            }
                        }
                    }
                }
                None => {}
            }
        }
        plain_start = end;
    }
    flush(out, plain_start, text.len());
    if open {
        out.push_str("</span>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(text: &str) -> String {
        let mut out = String::new();
        to_html(&mut out, text);
        out
    }

    #[test]
    fn markup_in_a_line_is_text() {
        assert_eq!(
            html("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn colours_become_spans_and_are_closed() {
        assert_eq!(
            html("\x1b[31merror\x1b[0m: ok"),
            "<span class=\"f1\">error</span>: ok"
        );
        assert_eq!(
            html("\x1b[1;92mbold green"),
            "<span class=\"a-b f10\">bold green</span>"
        );
        assert_eq!(
            html("\x1b[38;5;4mblue\x1b[39m."),
            "<span class=\"f4\">blue</span>."
        );
        assert_eq!(html("\x1b[38;2;1;2;3mrgb"), "rgb");
        assert_eq!(html("\x1b[44mon blue"), "<span class=\"g4\">on blue</span>");
    }

    #[test]
    fn other_escapes_and_controls_are_dropped() {
        assert_eq!(html("a\x1b[2Kb\x1b(Bc\x07d\te"), "abcd\te");
        assert_eq!(html("cut\x1b["), "cut");
        assert_eq!(html("ünï<cödé>"), "ünï&lt;cödé&gt;");
    }
}
