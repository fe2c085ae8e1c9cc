//! Secret masking for build logs: the forms in which a secret's value can show up in one log line.
//!
//! A log is written a line at a time, so a multi-line secret never appears whole in one line:
//! each of its lines is masked on its own. Steps often print credentials base64-encoded (HTTP
//! basic auth, Docker configs, Kubernetes secrets), so the standard and URL-safe base64 forms,
//! padded and unpadded, are masked too.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// What replaces a masked value.
const MASK: &str = "***";

/// The shortest line or encoding masked on its own. Shorter lines of a multi-line secret (a lone
/// `}` of a JSON key file) are left alone: masking them would hide ordinary text and reveal where
/// the short line occurs. Whole secrets are refused below this length when stored
/// ([`opus_core::model::MIN_SECRET_LEN`]).
const MIN_MASKED_LEN: usize = 4;

/// The texts to hide in a build's log, longest first so that a longer form is masked before a
/// shorter one it contains.
#[derive(Debug, Clone, Default)]
pub struct Masks {
    needles: Vec<String>,
}

impl Masks {
    /// The masks of a build whose secrets have the values `secrets`.
    pub fn new<I: IntoIterator<Item = String>>(secrets: I) -> Masks {
        let mut needles = Vec::new();
        for secret in secrets {
            if secret.is_empty() {
                continue;
            }
            needles.extend(
                [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
                    .map(|engine| engine.encode(secret.as_bytes()))
                    .into_iter()
                    .filter(|e| e.len() >= MIN_MASKED_LEN),
            );
            needles.extend(
                secret
                    .lines()
                    .map(|l| l.trim_end_matches('\r'))
                    .filter(|l| l.len() >= MIN_MASKED_LEN)
                    .map(str::to_owned),
            );
            needles.push(secret);
        }
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Masks { needles }
    }

    /// Every form of every secret, longest first.
    pub fn needles(&self) -> &[String] {
        &self.needles
    }

    /// `text` with every form of every secret replaced by `***`.
    pub fn apply(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for n in &self.needles {
            if text.contains(n.as_str()) {
                text = text.replace(n.as_str(), MASK);
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_of_a_multi_line_secret_is_masked() {
        let m = Masks::new(["-----BEGIN KEY-----\r\nabc123def\n}\n-----END KEY-----".to_owned()]);
        assert_eq!(m.apply("-----BEGIN KEY-----"), "***");
        assert_eq!(m.apply("line: abc123def!"), "line: ***!");
        assert_eq!(m.apply("-----END KEY-----"), "***");
        assert_eq!(
            m.apply("a } stays"),
            "a } stays",
            "short lines are not masked"
        );
    }

    #[test]
    fn base64_forms_are_masked() {
        // Encodes with '+' or '-' and padding: all four forms differ.
        let secret = "hunter2?>x";
        let m = Masks::new([secret.to_owned()]);
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(secret);
            assert_eq!(m.apply(&format!("auth {encoded} end")), "auth *** end");
        }
        assert_eq!(m.apply("plain hunter2?>x too"), "plain *** too");
    }

    #[test]
    fn empty_secrets_mask_nothing() {
        let m = Masks::new([String::new()]);
        assert_eq!(m.apply("nothing to hide"), "nothing to hide");
    }
}
