//! A repository directory as static files (what `basalt universe serve` and the built-in
//! repository of `basalt up` publish). Any web server does the same; this one also sends
//! the Universe media type for the index.

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::path::{Component, Path, PathBuf};

use crate::package::REPO_MEDIA_V5;
use crate::publish::INDEX_FILE;

pub fn router<S: Clone + Send + Sync + 'static>(dir: PathBuf) -> Router<S> {
    Router::new().route("/{*file}", get(file)).with_state(dir)
}

async fn file(State(dir): State<PathBuf>, UrlPath(rel): UrlPath<String>) -> Response {
    let Some(path) = inside(&dir, &rel) else {
        return (StatusCode::BAD_REQUEST, "bad path\n").into_response();
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let media = if rel == INDEX_FILE || rel == "repo" {
                REPO_MEDIA_V5
            } else if rel.ends_with(".json") {
                "application/json"
            } else if rel.ends_with(".tar.gz") {
                "application/gzip"
            } else {
                "application/octet-stream"
            };
            let mut r = (StatusCode::OK, bytes).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
            r
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (StatusCode::NOT_FOUND, "not found\n").into_response()
        }
        Err(_) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// The file under `dir` that `rel` names, or `None` unless it is one of the files a
/// repository publishes (metadata and index JSON, archives): nothing else in the directory,
/// a private key left there by mistake least of all, is ever served.
fn inside(dir: &Path, rel: &str) -> Option<PathBuf> {
    let mut out = dir.to_path_buf();
    let mut parts = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(p) => {
                out.push(p);
                parts.push(p.to_str()?);
            }
            _ => return None,
        }
    }
    let last = parts.last()?;
    // Metadata, index and archives; and assets packages point at (`assets/...`).
    let published = last.ends_with(".json")
        || last.ends_with(".tar.gz")
        || *last == "repo"
        || (parts.first() == Some(&"assets") && parts.len() > 1 && !last.ends_with(".key"));
    (published && !rel.ends_with('/')).then_some(out)
}

/// Serves `dir` until `shutdown` fires (`basalt universe serve`).
pub async fn run(
    listener: tokio::net::TcpListener,
    dir: PathBuf,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let app: Router = router(dir);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside() {
        let d = Path::new("/srv/r");
        assert_eq!(
            inside(d, "repo.json"),
            Some(PathBuf::from("/srv/r/repo.json"))
        );
        assert_eq!(
            inside(d, "packages/a/0.tar.gz"),
            Some(PathBuf::from("/srv/r/packages/a/0.tar.gz"))
        );
        assert_eq!(
            inside(d, "assets/kv-store/kv.py"),
            Some(PathBuf::from("/srv/r/assets/kv-store/kv.py"))
        );
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../../x",
            "keys/root-1.key",
            "keys/root-1.key/",
            "keys/root-1.key/.",
            "keys/root-1.pub",
        ] {
            assert_eq!(inside(d, bad), None, "{bad}");
        }
    }
}
