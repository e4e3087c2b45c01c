//! The console's files, compiled into the binary: hand-written HTML, CSS and JavaScript
//! with no build step and nothing fetched from elsewhere.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

const INDEX: &str = include_str!("assets/index.html");

/// `(name, content type, body)` of every file under `/console/`.
const FILES: &[(&str, &str, &str)] = &[
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
];

/// Only the console's own files may load and nothing may frame it: the page shows data
/// of the admin API, so a script from elsewhere or a framing page must not reach it.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

pub(super) async fn index() -> Response {
    with_headers("text/html; charset=utf-8", INDEX)
}

pub(super) async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => with_headers(content_type, body),
        None => {
            let mut r = (
                StatusCode::NOT_FOUND,
                "no such console file; open /console\n",
            )
                .into_response();
            add_security_headers(r.headers_mut());
            r
        }
    }
}

fn with_headers(content_type: &'static str, body: &'static str) -> Response {
    let mut r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    add_security_headers(r.headers_mut());
    r
}

fn add_security_headers(h: &mut http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change with the binary: a browser asks again rather than run old code.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}
