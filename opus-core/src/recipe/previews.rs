//! opus.yml's `previews:`: whether other branches deploy to their own preview environment, and
//! how long a preview lives without a deploy. `previews: true` (or `false`) keeps meaning what it
//! always did; `previews: { enabled: true, expire: 7d }` adds the expiry (`enabled` defaults to
//! true in the map form, and `expire` is read like the recipe's other durations).

use std::time::Duration;

use serde::de::value::MapAccessDeserializer;
use serde::{Deserialize, Deserializer};

/// The `previews:` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreviewsSpec {
    /// Whether every other branch deploys to its own preview environment.
    pub enabled: bool,
    /// How long a preview lives after its last deploy before opusd removes it (absent: forever).
    pub expire: Option<Duration>,
}

impl PreviewsSpec {
    /// Previews on, never expiring (`previews: true`; also what a package.json project gets).
    pub fn on() -> PreviewsSpec {
        PreviewsSpec {
            enabled: true,
            expire: None,
        }
    }
}

/// The map form, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewsMap {
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    #[serde(default, deserialize_with = "super::optional_duration")]
    expire: Option<Duration>,
}

fn enabled_by_default() -> bool {
    true
}

impl<'de> Deserialize<'de> for PreviewsSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Reads a bool or a map at the value itself, so errors keep their line.
        struct PreviewsVisitor;

        impl<'de> serde::de::Visitor<'de> for PreviewsVisitor {
            type Value = PreviewsSpec;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, or a map such as { enabled: true, expire: 7d }")
            }

            fn visit_bool<E: serde::de::Error>(self, enabled: bool) -> Result<PreviewsSpec, E> {
                Ok(PreviewsSpec {
                    enabled,
                    expire: None,
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<PreviewsSpec, A::Error> {
                let m = PreviewsMap::deserialize(MapAccessDeserializer::new(map))?;
                if m.expire == Some(Duration::ZERO) {
                    return Err(serde::de::Error::custom(
                        "expire must be longer than 0 (write it like 7d, 12h or 30m; leave it out to keep previews)",
                    ));
                }
                Ok(PreviewsSpec {
                    enabled: m.enabled,
                    expire: m.expire,
                })
            }
        }

        d.deserialize_any(PreviewsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::parse;

    fn previews(yaml: &str) -> PreviewsSpec {
        parse(&format!("build:\n  steps: [a]\n{yaml}"))
            .expect("a valid opus.yml")
            .previews
    }

    fn error(yaml: &str) -> String {
        parse(&format!("build:\n  steps: [a]\n{yaml}"))
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn a_bool_still_turns_previews_on_and_off() {
        assert_eq!(previews("previews: true\n"), PreviewsSpec::on());
        assert_eq!(previews("previews: false\n"), PreviewsSpec::default());
        assert_eq!(previews(""), PreviewsSpec::default());
    }

    #[test]
    fn the_map_form_reads_enabled_and_expire() {
        assert_eq!(
            previews("previews: { expire: 7d }\n"),
            PreviewsSpec {
                enabled: true,
                expire: Some(Duration::from_secs(7 * 24 * 3600)),
            }
        );
        assert_eq!(
            previews("previews:\n  enabled: false\n  expire: 2s\n"),
            PreviewsSpec {
                enabled: false,
                expire: Some(Duration::from_secs(2)),
            }
        );
        assert_eq!(previews("previews: {}\n"), PreviewsSpec::on());
    }

    #[test]
    fn mistakes_name_the_field_and_line() {
        let err = error("previews:\n  expire: soon\n");
        assert!(err.contains("expire") && err.contains("line 4"), "{err}");
        let err = error("previews:\n  expires: 7d\n");
        assert!(err.contains("expires") && err.contains("line 4"), "{err}");
        let err = error("previews: sometimes\n");
        assert!(err.contains("previews") && err.contains("line 3"), "{err}");
        let err = error("previews:\n  expire: 0s\n");
        assert!(err.contains("longer than 0"), "{err}");
    }
}
