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

/// JavaScript modules.
pub const JS: &str = "text/javascript; charset=utf-8";
/// HTML pages.
pub const HTML: &str = "text/html; charset=utf-8";

/// The client library, as `clients/js/` holds it.
const CLIENT: &[Asset] = &[
    Asset {
        path: "holdfast.js",
        content_type: JS,
        body: include_str!("../../../clients/js/holdfast.js"),
    },
    Asset {
        path: "lib/backoff.js",
        content_type: JS,
        body: include_str!("../../../clients/js/lib/backoff.js"),
    },
    Asset {
        path: "lib/client.js",
        content_type: JS,
        body: include_str!("../../../clients/js/lib/client.js"),
    },
    Asset {
        path: "lib/emitter.js",
        content_type: JS,
        body: include_str!("../../../clients/js/lib/emitter.js"),
    },
    Asset {
        path: "lib/errors.js",
        content_type: JS,
        body: include_str!("../../../clients/js/lib/errors.js"),
    },
    Asset {
        path: "lib/room.js",
        content_type: JS,
        body: include_str!("../../../clients/js/lib/room.js"),
    },
];

/// The operator console, as `clients/console/` holds it. Its page is
/// public and static; every call it makes carries the admin token the
/// operator types in.
const CONSOLE: &[Asset] = &[
    Asset {
        path: "index.html",
        content_type: HTML,
        body: include_str!("../../../clients/console/index.html"),
    },
    Asset {
        path: "console.js",
        content_type: JS,
        body: include_str!("../../../clients/console/console.js"),
    },
    Asset {
        path: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../../clients/console/console.css"),
    },
];

/// Mounts the client library at `/client/`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/client/{path:.*}").route(web::get().to(client)));
}

/// Mounts the console's page at `/admin/` (and `/admin`) and its files at
/// `/console/`.
pub fn console_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource(["/admin", "/admin/"]).route(web::get().to(console_page)))
        .service(web::resource("/console/{path}").route(web::get().to(console_file)));
}

/// `GET /client/{path}`.
async fn client(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    serve(&req, CLIENT, &path, "/client/")
}

/// `GET /admin/`.
async fn console_page(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    serve(&req, CONSOLE, "index.html", "/console/")
}

/// `GET /console/{path}`.
async fn console_file(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    serve(&req, CONSOLE, &path, "/console/")
}

/// Answers `path` from `assets` (mounted at `mount`, for the 404's words),
/// or `304 Not Modified` when the request's `If-None-Match` has its tag.
///
/// # Errors
/// 404 when no asset has that path.
pub fn serve(
    req: &HttpRequest,
    assets: &[Asset],
    path: &str,
    mount: &str,
) -> Result<HttpResponse, ApiError> {
    let asset = assets
        .iter()
        .find(|a| a.path == path)
        .ok_or_else(|| ApiError::NotFound(format!("no file {mount}{path}")))?;
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
