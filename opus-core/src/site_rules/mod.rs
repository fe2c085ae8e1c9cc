//! Redirect and header rules stored with a version: Netlify's `_redirects` and `_headers` files
//! (and the same rules written in opus.yml `site:`), parsed when the version is stored and kept
//! in its [`crate::store::SiteOptions`], so a rollback restores the rules of that version.
//!
//! - [`parse_redirects`] and [`parse_headers`] read the two files and name the file and line of
//!   the first malformed rule ([`RuleError`]).
//! - [`SiteRules`] is what is stored; [`RuleSet`] is its compiled form the site server matches
//!   requests against (patterns split once, so a request walks segments, never re-parses).
//! - `pattern`: path patterns with `:placeholders` and a trailing `*` splat, and target filling.

mod headers;
mod pattern;
mod redirects;

use serde::{Deserialize, Serialize};

pub use headers::parse_headers;
pub use pattern::Captures;
pub use redirects::{REDIRECTS_FILE, parse_redirects};

use pattern::Pattern;

/// The file of header rules in a version's output.
pub const HEADERS_FILE: &str = "_headers";

/// A rule that cannot be used: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {why}")]
pub struct RuleError {
    /// The file (`_redirects`, `_headers`, `opus.yml site.redirects`).
    pub file: String,
    /// The line (1-based), or the rule's position in opus.yml.
    pub line: usize,
    /// What is wrong, in words that say how to fix it.
    pub why: String,
}

/// One redirect, rewrite or custom-status rule (a `_redirects` line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// The path pattern matched (`/blog/:year/*`).
    pub from: String,
    /// Query parameters the request must carry: `(name, value)`, the value a literal or a
    /// `:placeholder` (which then fills the target).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<(String, String)>,
    /// Where to: a path in the version or, for redirects, an absolute URL.
    pub to: String,
    /// 200 (rewrite), 301, 302, 303, 307, 308 (redirect), 404 or 410 (that status with the
    /// target's content).
    pub status: u16,
    /// `!`: applies even where a file exists at the path (otherwise the file wins).
    #[serde(default)]
    pub force: bool,
}

/// Headers added to every response whose path matches a pattern (a `_headers` block).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderRule {
    /// The path pattern (`/*`, `/assets/*`, `/:lang/index.html`).
    pub path: String,
    /// `(name, value)` pairs, names lowercase, in file order.
    pub headers: Vec<(String, String)>,
}

/// The rules of one version, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRules {
    /// Redirect rules, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirects: Vec<Redirect>,
    /// Header rules; every matching one applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderRule>,
}

impl SiteRules {
    /// Whether there is no rule at all (the common case: nothing to match per request).
    pub fn is_empty(&self) -> bool {
        self.redirects.is_empty() && self.headers.is_empty()
    }

    /// The rules of `self` followed by those of `more` (a version's files, then opus.yml).
    pub fn then(mut self, more: SiteRules) -> SiteRules {
        self.redirects.extend(more.redirects);
        self.headers.extend(more.headers);
        self
    }

    /// The compiled form the site server matches with. The rules were checked when parsed; a
    /// pattern that no longer compiles (a store edited by hand) is left out.
    pub fn compile(&self) -> RuleSet {
        RuleSet {
            redirects: self
                .redirects
                .iter()
                .filter_map(|r| {
                    Some(CompiledRedirect {
                        from: Pattern::parse(&r.from).ok()?,
                        rule: r.clone(),
                    })
                })
                .collect(),
            headers: self
                .headers
                .iter()
                .filter_map(|h| Some((Pattern::parse(&h.path).ok()?, h.headers.clone())))
                .collect(),
        }
    }
}

/// A redirect rule with its pattern split.
#[derive(Debug, Clone)]
struct CompiledRedirect {
    from: Pattern,
    rule: Redirect,
}

/// The rules of a served version, ready to match.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    redirects: Vec<CompiledRedirect>,
    headers: Vec<(Pattern, Vec<(String, String)>)>,
}

/// What the first matching redirect rule says to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// The rule's status.
    pub status: u16,
    /// The filled target: a path (with any query) or an absolute URL.
    pub to: String,
    /// Whether the rule applies where a file exists.
    pub force: bool,
}

impl Matched {
    /// Whether this sends the client elsewhere (3xx) rather than serving content here.
    pub fn is_redirect(&self) -> bool {
        (300..400).contains(&self.status)
    }
}

impl RuleSet {
    /// Whether there is any redirect rule (most versions have none: nothing to match).
    pub fn has_redirects(&self) -> bool {
        !self.redirects.is_empty()
    }

    /// Whether there is any header rule.
    pub fn has_headers(&self) -> bool {
        !self.headers.is_empty()
    }

    /// The first redirect rule matching `path` (decoded, starting with `/`) and `query` (the raw
    /// query string, without `?`), with its target filled. A redirect to a path keeps the
    /// request's query string when the target has none (as Netlify does).
    pub fn redirect(&self, path: &str, query: Option<&str>) -> Option<Matched> {
        for r in &self.redirects {
            let Some(mut caps) = r.from.matches(path) else {
                continue;
            };
            if !query_matches(&r.rule.query, query, &mut caps) {
                continue;
            }
            let mut to = pattern::fill(&r.rule.to, &caps);
            let redirect = (300..400).contains(&r.rule.status);
            if redirect && !to.contains('?') && r.rule.query.is_empty() {
                if let Some(q) = query.filter(|q| !q.is_empty()) {
                    to.push('?');
                    to.push_str(q);
                }
            }
            return Some(Matched {
                status: r.rule.status,
                to,
                force: r.rule.force,
            });
        }
        None
    }

    /// The headers of every rule matching `path`, in rule order; a name given by several rules
    /// gets their values joined with `, ` (as Netlify does).
    pub fn headers(&self, path: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (pattern, headers) in &self.headers {
            if pattern.matches(path).is_none() {
                continue;
            }
            for (name, value) in headers {
                match out.iter_mut().find(|(n, _)| n == name) {
                    Some((_, v)) => {
                        v.push_str(", ");
                        v.push_str(value);
                    }
                    None => out.push((name.clone(), value.clone())),
                }
            }
        }
        out
    }
}

/// Whether `query` carries every parameter `wanted` names (a literal value must be equal; a
/// `:placeholder` takes the value into `caps`).
fn query_matches(wanted: &[(String, String)], query: Option<&str>, caps: &mut Captures) -> bool {
    if wanted.is_empty() {
        return true;
    }
    let pairs: Vec<(&str, &str)> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    wanted.iter().all(|(name, value)| {
        let Some((_, got)) = pairs.iter().find(|(n, _)| n == name) else {
            return false;
        };
        match value.strip_prefix(':') {
            Some(placeholder) => {
                caps.push(placeholder, got);
                true
            }
            None => value == got,
        }
    })
}

#[cfg(test)]
mod tests;

impl SiteRules {
    /// The rules written in opus.yml `site:`: `redirects` as `_redirects` lines, `headers` as
    /// path pattern -> (name -> value). Errors name `opus.yml site.redirects` and the rule's
    /// position (1-based), or `opus.yml site.headers` and the pattern's.
    pub fn from_spec<'a>(
        redirects: &[String],
        headers: impl IntoIterator<Item = (&'a String, &'a std::collections::BTreeMap<String, String>)>,
    ) -> Result<SiteRules, RuleError> {
        let mut rules = SiteRules::default();
        for (i, line) in redirects.iter().enumerate() {
            let rule = redirects::parse_line(line).map_err(|why| RuleError {
                file: "opus.yml site.redirects".into(),
                line: i + 1,
                why,
            })?;
            rules.redirects.push(rule);
        }
        for (i, (path, values)) in headers.into_iter().enumerate() {
            let fail = |why: String| RuleError {
                file: "opus.yml site.headers".into(),
                line: i + 1,
                why,
            };
            Pattern::parse(path).map_err(fail)?;
            let headers = values
                .iter()
                .map(|(n, v)| headers::check_header(n, v))
                .collect::<Result<Vec<_>, _>>()
                .map_err(fail)?;
            rules.headers.push(HeaderRule {
                path: path.clone(),
                headers,
            });
        }
        Ok(rules)
    }
}
