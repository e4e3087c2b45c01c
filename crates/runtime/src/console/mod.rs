//! The operator console: a single page served at `/console` (embedded in the binary, no
//! data in it) and the admin endpoints it reads: `/admin/state`, `/admin/events` (a
//! Server-Sent Events stream of the state), `/admin/history`, `/admin/config` and
//! `/admin/config/validate`. The page holds the admin token in `sessionStorage` and sends
//! it as a bearer token with every call; the assets themselves need none.
//!
//! Design and limits: `docs/decisions/0030-operator-console.md`.

mod assets;
mod config;
mod monitor;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use monitor::{Monitor, sampler};

use crate::Shared;

/// The console's page and its files, without auth (they hold no data).
pub(crate) fn asset_routes() -> Router {
    Router::new()
        .route("/console", get(assets::index))
        .route("/console/", get(assets::index))
        .route("/console/{file}", get(assets::file))
}

/// The admin endpoints the console reads, behind `server.admin_token`.
pub(crate) fn admin_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/admin/state", get(monitor::state))
        .route("/admin/events", get(monitor::events))
        .route("/admin/history", get(monitor::history))
        .route("/admin/config", get(config::running))
        .route("/admin/config/validate", post(config::validate))
}
