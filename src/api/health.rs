//! `GET /healthz` (the process answers), `GET /readyz` (it takes sessions) and `GET /metrics`.
//!
//! `/metrics` names every table and its players and bets, so on the main listener it answers only
//! an operator token for every table (`*`): `401` without a token, `403` with any other. The
//! `[metrics] listen` listener ([`metrics_only`]) serves it without a token, and nothing else.

use super::{ApiError, ApiState};
use crate::auth::{self, AuthError, TableScope, TokenRole};
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where the node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyState {
    Starting = 0,
    Ready = 1,
    Stopping = 2,
}

impl ReadyState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadyState::Starting => "starting",
            ReadyState::Ready => "ready",
            ReadyState::Stopping => "stopping",
        }
    }
}

/// Shared readiness flag: set by the composition root, read by `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicU8>);

impl Readiness {
    pub fn set(&self, state: ReadyState) {
        self.0.store(state as u8, Ordering::Release);
    }

    pub fn get(&self) -> ReadyState {
        match self.0.load(Ordering::Acquire) {
            1 => ReadyState::Ready,
            2 => ReadyState::Stopping,
            _ => ReadyState::Starting,
        }
    }
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
        .into_response()
}

async fn readyz(State(state): State<ApiState>) -> Response {
    let ready = state.readiness.get();
    let status = if ready == ReadyState::Ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Ready whatever Redis does, and whatever origin this node cannot reach: the node serves
    // what it has (other tables, control). `degraded` says why it cannot coordinate with the
    // cluster right now, or which tables' video it cannot pull.
    let mut body = serde_json::json!({ "status": ready.as_str(), "tables": state.tables.len() });
    if ready == ReadyState::Ready {
        let mut reasons = Vec::new();
        if let Some(reason) = state.cluster.degraded() {
            reasons.push(reason);
        }
        let unreachable = state.cluster.pulls().unreachable;
        if !unreachable.is_empty() {
            reasons.push(unreachable_reason(&unreachable));
            body["unreachable_origins"] = serde_json::json!(unreachable);
        }
        if !reasons.is_empty() {
            body["status"] = "degraded".into();
            body["reason"] = reasons.join("; ").into();
        }
    }
    (status, axum::Json(body)).into_response()
}

/// One sentence naming each table whose origin this node cannot reach, and what to check.
fn unreachable_reason(unreachable: &[crate::cluster::UnreachableOrigin]) -> String {
    let tables: Vec<String> = unreachable
        .iter()
        .map(|u| match &u.origin {
            Some(origin) => format!("{} (origin node {origin}: {})", u.table, u.error),
            None => format!("{} (origin: {})", u.table, u.error),
        })
        .collect();
    format!(
        "cannot pull the video of {} from the origin; players of these tables are sent to other nodes; check that this node reaches the origin's media ports over UDP",
        tables.join(", ")
    )
}

/// The router of the `[metrics] listen` listener: `GET /metrics` without a token.
pub fn metrics_only(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(open_metrics))
        .with_state(metrics)
}

async fn open_metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    exposition(&metrics)
}

async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let identity = state.tokens.verify(auth::bearer(header)?)?;
    if identity.role != TokenRole::Operator {
        return Err(AuthError::WrongRole {
            have: identity.role,
            need: "operator",
        }
        .into());
    }
    if identity.scope != TableScope::Any {
        return Err(ApiError::Forbidden(
            "/metrics covers every table; use an operator token for table * (`tablecast token --role operator --table '*'`), or scrape the [metrics] listen listener".into(),
        ));
    }
    Ok(exposition(&state.metrics))
}

fn exposition(metrics: &Metrics) -> Response {
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], metrics.render()).into_response()
}
