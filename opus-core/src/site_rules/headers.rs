//! The `_headers` file: a path pattern on a line of its own, then indented `Name: value` lines.

use super::pattern::Pattern;
use super::{HeaderRule, RuleError};

/// Parses a `_headers` file (`file` names it in errors). Refused, naming the line: a header line
/// before any path, a line that is neither, a header name that is not an HTTP token, a value with
/// control characters, a path with no header under it.
pub fn parse_headers(text: &str, file: &str) -> Result<Vec<HeaderRule>, RuleError> {
    let mut out: Vec<HeaderRule> = Vec::new();
    let mut open_line = 0;
    for (i, raw) in text.lines().enumerate() {
        let fail = |why: String| RuleError {
            file: file.to_owned(),
            line: i + 1,
            why,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('/') && !raw.starts_with([' ', '\t']) {
            if let Some(last) = out.last() {
                if last.headers.is_empty() {
                    return Err(RuleError {
                        file: file.to_owned(),
                        line: open_line,
                        why: format!("{:?} has no header under it", last.path),
                    });
                }
            }
            Pattern::parse(line).map_err(fail)?;
            out.push(HeaderRule {
                path: line.to_owned(),
                headers: Vec::new(),
            });
            open_line = i + 1;
            continue;
        }
        let Some(rule) = out.last_mut() else {
            return Err(fail(format!(
                "{line:?} comes before any path (start a block with a path such as /*)"
            )));
        };
        rule.headers.push(header_line(line).map_err(fail)?);
    }
    if let Some(last) = out.last() {
        if last.headers.is_empty() {
            return Err(RuleError {
                file: file.to_owned(),
                line: open_line,
                why: format!("{:?} has no header under it", last.path),
            });
        }
    }
    Ok(out)
}

/// Parses `Name: value` (also used for opus.yml's `site.headers`).
pub(super) fn header_line(line: &str) -> Result<(String, String), String> {
    let Some((name, value)) = line.split_once(':') else {
        return Err(format!(
            "{line:?} is not a header (Name: value) nor a path (starting with '/')"
        ));
    };
    check_header(name.trim(), value.trim())
}

/// Checks a header name (an HTTP token) and value (no control characters), and lowercases the
/// name.
pub(super) fn check_header(name: &str, value: &str) -> Result<(String, String), String> {
    const TOKEN: &[u8] = b"!#$%&'*+-.^_`|~";
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || TOKEN.contains(&b))
    {
        return Err(format!("{name:?} is not a valid header name"));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!("the value of {name} holds control characters"));
    }
    Ok((name.to_ascii_lowercase(), value.to_owned()))
}
