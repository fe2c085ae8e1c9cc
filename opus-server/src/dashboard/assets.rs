//! The dashboard's one stylesheet and one script, embedded in the binary and served under names
//! that carry a hash of their content (`/assets/app.3f2a9c1b0d4e.css`), so browsers may cache
//! them for a year: a changed file is a new name.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::DashboardError;

/// One embedded file.
pub(super) struct Asset {
    /// The path it is served at, hash included.
    pub(super) path: String,
    body: &'static str,
    content_type: &'static str,
}

impl Asset {
    fn new(stem: &str, ext: &str, body: &'static str, content_type: &'static str) -> Asset {
        let digest = Sha256::digest(body.as_bytes());
        Asset {
            path: format!("/assets/{stem}.{}.{ext}", hex::encode(&digest[..6])),
            body,
            content_type,
        }
    }
}

/// The stylesheet.
pub(super) static CSS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "app",
        "css",
        include_str!("assets/app.css"),
        "text/css; charset=utf-8",
    )
});

/// The script (live log, filter-as-you-type).
pub(super) static JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "app",
        "js",
        include_str!("assets/app.js"),
        "text/javascript; charset=utf-8",
    )
});

/// `GET /assets/{name}`: an embedded file by its hashed name; any other name is 404 (an old
/// hash too: pages always name the current one).
pub(super) async fn serve(Path(name): Path<String>) -> Response {
    for asset in [&*CSS, &*JS] {
        if asset.path.strip_prefix("/assets/") == Some(name.as_str()) {
            return (
                [
                    (CONTENT_TYPE, asset.content_type),
                    (CACHE_CONTROL, "public, max-age=31536000, immutable"),
                ],
                asset.body,
            )
                .into_response();
        }
    }
    DashboardError::NotFound(format!("no asset {name:?}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_a_hash_of_the_content() {
        let a = Asset::new("app", "css", "body{}", "text/css");
        let b = Asset::new("app", "css", "body{color:red}", "text/css");
        assert!(a.path.starts_with("/assets/app.") && a.path.ends_with(".css"));
        assert_eq!(a.path.len(), "/assets/app..css".len() + 12);
        assert_ne!(a.path, b.path);
    }

    #[tokio::test]
    async fn an_unknown_name_is_404_and_a_known_one_is_cached_for_a_year() {
        let resp = serve(Path("app.000000000000.css".into())).await;
        assert_eq!(resp.status(), 404);
        let name = CSS.path.trim_start_matches("/assets/").to_owned();
        let resp = serve(Path(name)).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()[CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
    }
}
