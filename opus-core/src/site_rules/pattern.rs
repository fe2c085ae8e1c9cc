//! Path patterns of rules: literal segments, `:name` placeholders (one segment each) and a
//! trailing `*` splat (the rest of the path, possibly empty). A trailing `/` is not significant,
//! on either side (`/blog` and `/blog/` are one path, as on Netlify).

/// A checked path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pattern {
    segments: Vec<Segment>,
    splat: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Placeholder(String),
}

/// Values taken from a request by placeholders and the splat, by name (`splat` for `*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures(Vec<(String, String)>);

impl Captures {
    /// Records `value` for `name`.
    pub(super) fn push(&mut self, name: &str, value: &str) {
        self.0.push((name.to_owned(), value.to_owned()));
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a path into its segments, without empty ones.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

impl Pattern {
    /// Checks a pattern: it starts with `/`; `*` only as the whole last segment; placeholder
    /// names are letters, digits and `_`.
    pub(super) fn parse(raw: &str) -> Result<Pattern, String> {
        if !raw.starts_with('/') {
            return Err(format!(
                "{raw:?} is not a path (rules match paths starting with '/'; rules for other hosts are not supported)"
            ));
        }
        let parts: Vec<&str> = segments(raw).collect();
        let mut out = Pattern {
            segments: Vec::with_capacity(parts.len()),
            splat: false,
        };
        for (i, part) in parts.iter().enumerate() {
            if *part == "*" {
                if i + 1 != parts.len() {
                    return Err(format!("in {raw:?}, '*' may only end the pattern"));
                }
                out.splat = true;
            } else if part.contains('*') {
                return Err(format!(
                    "in {raw:?}, '*' must be a whole segment ('/blog/*')"
                ));
            } else if let Some(name) = part.strip_prefix(':') {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!(
                        "in {raw:?}, {part:?} is not a placeholder (':' then letters, digits, '_')"
                    ));
                }
                out.segments.push(Segment::Placeholder(name.to_owned()));
            } else {
                out.segments.push(Segment::Literal((*part).to_owned()));
            }
        }
        Ok(out)
    }

    /// The values `path` gives the placeholders and the splat, if it matches.
    pub(super) fn matches(&self, path: &str) -> Option<Captures> {
        let mut caps = Captures::default();
        let mut rest = path.trim_start_matches('/');
        for seg in &self.segments {
            let (part, tail) = match rest.split_once('/') {
                Some((p, t)) => (p, t),
                None => (rest, ""),
            };
            if part.is_empty() {
                return None;
            }
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Placeholder(name) => caps.push(name, part),
            }
            rest = tail.trim_start_matches('/');
        }
        if self.splat {
            caps.push("splat", rest.trim_end_matches('/'));
            return Some(caps);
        }
        rest.trim_matches('/').is_empty().then_some(caps)
    }

    /// Whether this pattern is `target` with its placeholders (and `:splat` for the splat)
    /// standing for themselves: a redirect from it to `target` sends every match to itself.
    pub(super) fn is_same_as(&self, target: &str) -> bool {
        let Ok(t) = Pattern::parse(target.split('?').next().unwrap_or(target)) else {
            return false;
        };
        let mut mine = self.segments.clone();
        if self.splat {
            mine.push(Segment::Placeholder("splat".into()));
        }
        let mut theirs = t.segments;
        if t.splat {
            // `/*` as a target is a literal star, not the splat; keep it distinct.
            theirs.push(Segment::Literal("*".into()));
        }
        mine == theirs
    }
}

/// `target` with each `:name` it holds replaced by the captured value (an unknown name, such as a
/// port in `https://host:8443/`, is left as written). Longer names are tried first, so
/// `:idx` is not read as `:id` then `x`.
pub(super) fn fill(target: &str, caps: &Captures) -> String {
    let mut out = String::with_capacity(target.len() + 16);
    let mut rest = target;
    while let Some(i) = rest.find(':') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let name = &after[..len];
        // The longest captured name that prefixes what follows ':'.
        let found = (1..=len)
            .rev()
            .find_map(|n| caps.get(&name[..n]).map(|v| (n, v)));
        match found {
            Some((n, value)) => {
                out.push_str(value);
                rest = &after[n..];
            }
            None => {
                out.push(':');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
