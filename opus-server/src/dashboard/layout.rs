//! The page shell every page shares (head, navigation, who is logged in), the error page, the
//! login page, and the small pieces pages repeat (a state badge, an age, a duration).

use std::time::Duration;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use opus_core::model::BuildState;

use super::assets;
use super::session::{Role, Visitor};

/// The headers of every page: not cached (pages show live state), never framed (a framed
/// confirmation page could be clicked by another site), scripts and styles only from here.
const PAGE_HEADERS: [(HeaderName, &str); 5] = [
    (CONTENT_TYPE, "text/html; charset=utf-8"),
    (CACHE_CONTROL, "no-store"),
    (
        HeaderName::from_static("content-security-policy"),
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (HeaderName::from_static("x-frame-options"), "DENY"),
    (HeaderName::from_static("referrer-policy"), "same-origin"),
];

/// A page as a response, with [`PAGE_HEADERS`].
pub(super) fn respond(status: StatusCode, page: Markup) -> Response {
    (status, PAGE_HEADERS, page.into_string()).into_response()
}

/// The whole page around `body`: `visitor` decides the header (read-only badge, log out).
pub(super) fn page(title: &str, visitor: Option<&Visitor>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Opus" }
                link rel="stylesheet" href=(assets::CSS.path);
                script src=(assets::JS.path) defer {}
            }
            body {
                header.top {
                    a href="/" { "Opus" }
                    nav aria-label="Main" {
                        a href="/" { "Projects" }
                        a href="/queue" { "Queue" }
                    }
                    @if let Some(v) = visitor {
                        div.who {
                            @if v.role == Role::Viewer {
                                span.state title="logged in with the viewer token" { "read-only" }
                            }
                            @if v.logged_in {
                                form.inline method="post" action="/logout" {
                                    input type="hidden" name="csrf" value=(v.csrf);
                                    button.secondary type="submit" { "Log out" }
                                }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page saying what went wrong, with `status`.
pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    respond(
        status,
        page(
            title,
            None,
            html! {
                h1 { (status.as_u16()) " " (title) }
                p.notice.error role="alert" { (message) }
                p { a href="/" { "Back to the projects" } }
            },
        ),
    )
}

/// The login form; `error` says why the last attempt failed.
pub(super) fn login_page(next: &str, error: Option<&str>) -> Response {
    respond(
        StatusCode::OK,
        page(
            "Log in",
            None,
            html! {
                h1 { "Log in" }
                @if let Some(e) = error {
                    p.notice.error role="alert" { (e) }
                }
                section.card {
                    form.row method="post" action="/login" {
                        input type="hidden" name="next" value=(next);
                        label for="token" { "API token or viewer token"
                            input id="token" name="token" type="password" autocomplete="current-password" required autofocus;
                        }
                        button type="submit" { "Log in" }
                    }
                    p.muted { "The token opusd was started with (--token), or its read-only --viewer-token." }
                }
            },
        ),
    )
}

/// A build state as a coloured badge.
pub(super) fn state_badge(state: BuildState) -> Markup {
    let name = state.to_string();
    html! { span class={ "state state-" (name) } { (name.replace('_', " ")) } }
}

/// How long ago a time was, as the CLI says it (`5m ago`).
pub(super) use opus_core::age::ago;

/// A duration as people read it: `850 ms`, `12.3 s`, `4m 05s`.
pub(super) fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{}m {:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// A size in bytes as people read it.
pub(super) fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn ages_durations_and_sizes_read_well() {
        assert_eq!(ago(SystemTime::now() - Duration::from_secs(5)), "5s ago");
        assert_eq!(ago(SystemTime::now() - Duration::from_secs(7200)), "2h ago");
        assert_eq!(ago(SystemTime::now() + Duration::from_secs(60)), "0s ago");
        assert_eq!(duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(duration(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(duration(Duration::from_secs(245)), "4m 05s");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KB");
    }

    #[test]
    fn error_pages_escape_their_message() {
        let resp = error_page(StatusCode::NOT_FOUND, "no project \"<script>\"");
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()["x-frame-options"], "DENY");
    }
}
