//! How long ago something happened, as a person reads it in a table: the CLI's and the
//! dashboard's "queued", "last build" and "released" columns say it the same way.

use std::time::SystemTime;

/// `42s ago`, `5m ago`, `3h ago`, `2d ago`; a time in the future (a clock set back) reads
/// `0s ago`.
pub fn ago(then: SystemTime) -> String {
    let secs = SystemTime::now()
        .duration_since(then)
        .unwrap_or_default()
        .as_secs();
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_unit_is_whole_and_the_future_is_now() {
        let past = |s| SystemTime::now() - Duration::from_secs(s);
        assert_eq!(ago(past(59)), "59s ago");
        assert_eq!(ago(past(300)), "5m ago");
        assert_eq!(ago(past(3 * 3600 + 5)), "3h ago");
        assert_eq!(ago(past(2 * 86400)), "2d ago");
        assert_eq!(ago(SystemTime::now() + Duration::from_secs(60)), "0s ago");
    }
}
