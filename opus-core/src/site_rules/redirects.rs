//! The `_redirects` file: one rule a line, `from [param=value ...] to [status[!]]`, `#` comments.

use super::pattern::Pattern;
use super::{Redirect, RuleError};

/// The file of redirect rules in a version's output.
pub const REDIRECTS_FILE: &str = "_redirects";

/// Statuses a rule may have: a rewrite, the redirects, and content served with an error status.
const STATUSES: [u16; 8] = [200, 301, 302, 303, 307, 308, 404, 410];

/// Parses a `_redirects` file (`file` names it in errors). Refused, naming the line: a status
/// that is not in `STATUSES`; a redirect that sends a path to itself; a rewrite or error
/// status with an absolute URL as target (Opus does not proxy); conditions on country, language,
/// role or cookie (not supported); a pattern that is not a path.
pub fn parse_redirects(text: &str, file: &str) -> Result<Vec<Redirect>, RuleError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |why: String| RuleError {
            file: file.to_owned(),
            line: i + 1,
            why,
        };
        out.push(parse_line(line).map_err(fail)?);
    }
    Ok(out)
}

/// Parses one rule (also used for opus.yml's `site.redirects` entries, which are lines).
pub(super) fn parse_line(line: &str) -> Result<Redirect, String> {
    // A comment may follow a rule.
    let line = line.split(" #").next().unwrap_or(line);
    let mut tokens = line.split_whitespace();
    let Some(from) = tokens.next() else {
        return Err("the rule is empty".into());
    };
    let mut query = Vec::new();
    let mut to = None;
    for t in tokens.by_ref() {
        if t.starts_with('/') || t.contains("://") {
            to = Some(t);
            break;
        }
        match t.split_once('=') {
            Some((k, v)) if !k.is_empty() => query.push((k.to_owned(), v.to_owned())),
            _ => {
                return Err(format!(
                    "{t:?} is neither a query condition (name=value) nor a target (a path starting with '/' or a URL)"
                ));
            }
        }
    }
    let Some(to) = to else {
        return Err(format!("the rule for {from:?} has no target"));
    };
    let (status, force) = match tokens.next() {
        None => (301, false),
        Some(s) => {
            let (digits, force) = match s.strip_suffix('!') {
                Some(d) => (d, true),
                None => (s, false),
            };
            let status: u16 = digits.parse().map_err(|_| {
                format!("{s:?} is not a status (one of 200, 301, 302, 303, 307, 308, 404, 410, with '!' to force)")
            })?;
            if !STATUSES.contains(&status) {
                return Err(format!(
                    "status {status} is not supported (one of 200, 301, 302, 303, 307, 308, 404, 410)"
                ));
            }
            (status, force)
        }
    };
    if let Some(extra) = tokens.next() {
        if extra.contains('=') {
            return Err(format!(
                "the condition {extra:?} is not supported (Opus has no country, language, role or cookie conditions)"
            ));
        }
        return Err(format!("unexpected {extra:?} after the status"));
    }
    let pattern = Pattern::parse(from)?;
    let redirect = (300..400).contains(&status);
    if !redirect && !to.starts_with('/') {
        return Err(format!(
            "a {status} rule serves a path of this version; {to:?} is a URL (Opus does not proxy)"
        ));
    }
    if redirect && to.starts_with('/') && query.is_empty() && pattern.is_same_as(to) {
        return Err(format!(
            "{from:?} redirects to itself ({to:?}): every request it matches would loop"
        ));
    }
    Ok(Redirect {
        from: from.to_owned(),
        query,
        to: to.to_owned(),
        status,
        force,
    })
}
