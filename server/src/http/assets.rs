//! Files embedded in the binary and served as they are: the JavaScript
//! client library under `/client/` (`/client/holdfast.js` imports the rest
//! relative to itself), the operator console at `/admin/` (its files under
//! `/console/`), and the demo's page (`crate::demo`). No build step stands between `clients/js/` and
//! what is served, so a machine without Node serves the same library that
//! its tests ran.
//!
//! Each answer carries an `ETag` (a hash of the file) and `Cache-Control:
//! no-cache`, so a browser revalidates and gets `304 Not Modified` until
//! the binary changes.

use actix_web::http::header::{self, EntityTag};
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiError;

/// One embedded file.
pub struct Asset {
    /// Its path under the mount point.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its content.
    pub body: &'static str,
}

/// Files served under one mount point, e.g. `/client/`.
pub struct Bundle {
    /// The path prefix, with its slashes.
    pub mount: &'static str,
    /// Its files.
    pub files: &'static [Asset],
}

/// An [`Asset`] from a file of the repository (a path relative to this
/// file's directory, as `include_str!` takes it).
macro_rules! asset {
    ($path:literal, $type:expr, $file:literal) => {
        $crate::http::assets::Asset {
            path: $path,
            content_type: $type,
            body: include_str!($file),
        }
    };
}
pub(crate) use asset;

/// JavaScript modules.
pub const JS: &str = "text/javascript; charset=utf-8";
/// HTML pages.
pub const HTML: &str = "text/html; charset=utf-8";
/// Style sheets.
pub const CSS: &str = "text/css; charset=utf-8";

/// The client library, as `clients/js/` holds it.
const CLIENT: Bundle = Bundle {
    mount: "/client/",
    files: &[
        asset!("holdfast.js", JS, "../../../clients/js/holdfast.js"),
        asset!("lib/backoff.js", JS, "../../../clients/js/lib/backoff.js"),
        asset!("lib/client.js", JS, "../../../clients/js/lib/client.js"),
        asset!("lib/emitter.js", JS, "../../../clients/js/lib/emitter.js"),
        asset!("lib/errors.js", JS, "../../../clients/js/lib/errors.js"),
        asset!("lib/room.js", JS, "../../../clients/js/lib/room.js"),
    ],
};

/// The operator console, as `clients/console/` holds it. Its page is
/// public and static; every call it makes carries the admin token the
/// operator types in.
const CONSOLE: Bundle = Bundle {
    mount: "/console/",
    files: &[
        asset!("index.html", HTML, "../../../clients/console/index.html"),
        asset!("console.js", JS, "../../../clients/console/console.js"),
        asset!("console.css", CSS, "../../../clients/console/console.css"),
    ],
};

/// Mounts the client library at `/client/`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    mount(cfg, &CLIENT, &[]);
}

/// Mounts the console's page at `/admin/` (and `/admin`) and its files at
/// `/console/`.
pub fn console_routes(cfg: &mut web::ServiceConfig) {
    mount(cfg, &CONSOLE, &["/admin", "/admin/"]);
}

/// Serves `bundle`'s files under its mount point, and its `index.html` at
/// each of `index_at`.
pub fn mount(cfg: &mut web::ServiceConfig, bundle: &'static Bundle, index_at: &[&str]) {
    if !index_at.is_empty() {
        let page = move |req: HttpRequest| async move { serve(&req, bundle, "index.html") };
        cfg.service(web::resource(index_at.to_vec()).route(web::get().to(page)));
    }
    let file =
        move |req: HttpRequest, path: web::Path<String>| async move { serve(&req, bundle, &path) };
    cfg.service(web::resource(format!("{}{{path:.*}}", bundle.mount)).route(web::get().to(file)));
}

/// Answers `path` from `bundle`, or `304 Not Modified` when the request's
/// `If-None-Match` has its tag.
///
/// # Errors
/// 404 when no file has that path.
fn serve(req: &HttpRequest, bundle: &Bundle, path: &str) -> Result<HttpResponse, ApiError> {
    let asset = bundle
        .files
        .iter()
        .find(|a| a.path == path)
        .ok_or_else(|| ApiError::NotFound(format!("no file {}{path}", bundle.mount)))?;
    let tag = EntityTag::new_strong(format!("{:016x}", fnv1a(asset.body.as_bytes())));
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag.to_string()));
    let mut answer = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    answer
        .insert_header((header::ETAG, tag))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if fresh {
        return Ok(answer.finish());
    }
    Ok(answer
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .body(asset.body))
}

/// FNV-1a, 64 bits: a stable fingerprint of a file for its `ETag`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
