//! The cluster's HTTP surface:
//! - `GET /api/v1/cluster/nodes` (operator token for `*`): every live node, its state, load,
//!   tables and heartbeat age;
//! - `POST /api/v1/cluster/nodes/{id}/drain` (operator for `*`): the node hands its tables over,
//!   tells its players to move and exits (another node's drain is passed on to it);
//! - `GET /cluster/v1/tables/{table}/link`: the WebSocket another node opens to this one when
//!   this node owns the table (`control/link.rs`).

use super::{ApiError, ApiState};
use crate::auth::{self, AuthError, Identity, TableScope, TokenRole};
use crate::control::link::{self, LinkDown, LinkUp};
use crate::ids::{NodeId, TableId};
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/cluster/nodes", get(nodes))
        .route("/api/v1/cluster/nodes/{id}/drain", post(drain))
        .route("/cluster/v1/tables/{table}/link", get(link))
}

/// An operator token for every table (`*`).
fn operator(state: &ApiState, headers: &HeaderMap, what: &str) -> Result<Identity, ApiError> {
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
        return Err(ApiError::Forbidden(format!(
            "{what} concerns every table; use an operator token for table * (`tablecast token --role operator --table '*'`)"
        )));
    }
    Ok(identity)
}

async fn nodes(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    operator(&state, &headers, "the node list")?;
    let now = crate::control::server_ms();
    let view = &state.cluster;
    let nodes: Vec<serde_json::Value> = view
        .nodes()
        .into_iter()
        .map(|n| {
            serde_json::json!({
                "id": n.id,
                "region": n.region,
                "public_url": n.public_url,
                "state": n.state,
                "load": n.load,
                "tables": n.tables,
                "relays": n.relays,
                "unreachable_origins": n.unreachable_origins,
                "heartbeat_age_ms": now.saturating_sub(n.heartbeat_ms),
                "self": n.id == view.me,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "clustered": view.clustered,
        "degraded": view.degraded(),
        "nodes": nodes,
    }))
    .into_response())
}

async fn drain(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = operator(&state, &headers, "draining a node")?;
    let id =
        NodeId::parse(&raw).map_err(|_| ApiError::UnknownNode(raw.chars().take(64).collect()))?;
    if id == state.cluster.me {
        info!(user = %who.user, "drain requested over HTTP");
        state.drain.send_replace(true);
        return Ok((
            axum::http::StatusCode::ACCEPTED,
            Json(serde_json::json!({ "node": id, "state": "draining" })),
        )
            .into_response());
    }
    // Another node: pass the request on, with the caller's own token.
    let node = state
        .cluster
        .nodes()
        .into_iter()
        .find(|n| n.id == id)
        .ok_or_else(|| ApiError::UnknownNode(id.to_string()))?;
    let url = format!(
        "{}/api/v1/cluster/nodes/{id}/drain",
        node.public_url.trim_end_matches('/')
    );
    let auth = headers
        .get(header::AUTHORIZATION)
        .cloned()
        .ok_or(ApiError::Auth(AuthError::Missing))?;
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let answer = client
        .post(&url)
        .header(header::AUTHORIZATION, auth)
        .send()
        .await
        .map_err(|e| {
            ApiError::Unavailable(format!("cannot reach node {id} at {url}: {e}; is it up?"))
        })?;
    let status = axum::http::StatusCode::from_u16(answer.status().as_u16())
        .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    let body = answer.text().await.unwrap_or_default();
    Ok((status, body).into_response())
}

async fn link(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let who = operator(&state, &headers, "a link between nodes")?;
    let table =
        TableId::parse(&raw).map_err(|_| ApiError::UnknownTable(raw.chars().take(64).collect()))?;
    let writer = state
        .control
        .local_handle(&table)
        .ok_or_else(|| ApiError::NotOwner(table.to_string()))?;
    let span = info_span!("link", table_id = %table, peer = %who.user);
    Ok(ws.on_upgrade(move |socket| pump(socket, writer).instrument(span)))
}

/// Moves link messages between the socket and `serve_link`.
async fn pump(socket: WebSocket, writer: crate::control::TableHandle) {
    let (mut sink, mut stream) = socket.split();
    let (up_tx, up_rx) = mpsc::channel::<LinkUp>(1024);
    let (down_tx, mut down_rx) = mpsc::channel::<LinkDown>(1024);
    let serve = tokio::spawn(link::serve_link(writer, up_rx, down_tx));
    let reader = async {
        while let Some(Ok(frame)) = stream.next().await {
            let Message::Text(text) = frame else {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
                continue;
            };
            match serde_json::from_str::<LinkUp>(text.as_str()) {
                Ok(msg) => {
                    if up_tx.send(msg).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "a node sent a link message this node cannot read; are both nodes the same version?");
                    break;
                }
            }
        }
        drop(up_tx);
    };
    let writer = async {
        while let Some(msg) = down_rx.recv().await {
            let Ok(text) = serde_json::to_string(&msg) else {
                continue;
            };
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    };
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
    serve.abort();
    debug!("link closed");
}
