//! The HTTP layer (axum): WHIP and WHEP resources, health and metrics, demo tokens, pages.
//!
//! - `resource`: the WHIP/WHEP resource rules shared by [`whip`] and [`whep`] (RFC 9725);
//! - `health`: `/healthz`, `/readyz`, `/metrics` (operator token), and the `[metrics] listen`
//!   listener's own router;
//! - `tables`: `GET /api/v1/tables/{table}` and the dealer's round actions;
//! - `ws`: `GET /ws/{table}`, the control protocol over a WebSocket;
//! - `demo`: `POST /api/v1/demo/token`, only with `[auth] demo = true`, and within its limits;
//! - `pages`: `/`, `/play/{table}`, `/dealer/{table}`, `/ops` and `/web/*`;
//! - `error`: the one place where errors become HTTP responses.

pub mod cluster;
mod demo;
pub mod error;
mod health;
mod pages;
mod resource;
pub mod tables;
pub mod whep;
pub mod whip;
pub mod ws;

pub use demo::{BehindProxy, DemoPolicy};
pub use error::ApiError;
pub use health::{Readiness, ReadyState, metrics_only};

use crate::auth::Tokens;
use crate::ids::TableId;
use crate::media::MediaHandle;
use crate::metrics::Metrics;
use axum::Router;
use axum::http::Request;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use tower_http::trace::TraceLayer;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub media: MediaHandle,
    pub tokens: Arc<Tokens>,
    pub metrics: Arc<Metrics>,
    /// The tables this node serves; anything else is `404`.
    pub tables: Arc<BTreeSet<TableId>>,
    pub readiness: Readiness,
    /// Largest accepted SDP or sdpfrag body.
    pub max_sdp_bytes: usize,
    /// The tables' control plane.
    pub control: Arc<crate::control::ControlPlane>,
    /// Caps and rates on what one user or address may open (`[limits]`).
    pub admission: crate::limits::Admission,
    /// What this node knows of the cluster (itself alone, without Redis).
    pub cluster: Arc<crate::control::placement::ClusterView>,
    /// This node's pulls of other nodes' cameras (in a cluster).
    pub cascade: Option<Arc<crate::media::relay::Cascade>>,
    /// Set to true to drain this node (`POST /api/v1/cluster/nodes/{id}/drain`).
    pub drain: Arc<tokio::sync::watch::Sender<bool>>,
    /// TURN servers handed to WHIP/WHEP clients in `Link` headers (`[turn]`), if any.
    pub turn: Option<Arc<crate::turn::TurnServers>>,
}

/// Options that change which routes exist.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// Directory of the pages and `/web/*` files.
    pub web_root: PathBuf,
    /// Serve `POST /api/v1/demo/token`, within these limits.
    pub demo: Option<DemoPolicy>,
}

/// The node's whole HTTP surface.
pub fn router(state: ApiState, options: &RouterOptions) -> Router {
    let mut api = Router::new()
        .merge(cluster::routes())
        .merge(whip::routes(state.max_sdp_bytes))
        .merge(whep::routes(state.max_sdp_bytes))
        .merge(whep::relay_routes(state.max_sdp_bytes))
        .merge(health::routes())
        .merge(tables::routes())
        .merge(ws::routes());
    if let Some(policy) = &options.demo {
        api = api.merge(demo::routes(policy.clone()));
    }
    api.with_state(state)
        .merge(pages::routes(&options.web_root))
        .layer(
            // Failed requests are logged once, with what to do, where the error becomes a
            // response (`error.rs`); the trace layer only opens the request's span.
            TraceLayer::new_for_http()
                .on_failure(())
                .make_span_with(|req: &Request<_>| {
                    tracing::info_span!(
                        "http",
                        method = %req.method(),
                        path = %req.uri().path(),
                        table = tracing::field::Empty,
                        session = tracing::field::Empty,
                        role = tracing::field::Empty,
                    )
                }),
        )
}
