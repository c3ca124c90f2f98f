//! The table's HTTP face: its snapshot, and the dealer's round actions for consoles and
//! automation that do not hold a control connection.
//!
//! - `GET  /api/v1/tables/{table}`: the snapshot (any token for the table);
//! - `POST /api/v1/tables/{table}/round/open | close | result | void`: dealer or operator token;
//!   `result` takes `{"outcome": "banker"}` (or a list of spots, and an optional `media_ts` or
//!   `captured_at`), `void` an optional `{"reason": "..."}`. Each answers `200 {"round": N}`
//!   (`result` also with the `media_ts` it named) once the action is in
//!   the table's log, `409` when the round's state refuses it, `422` for a bad argument;
//! - `GET  /api/v1/tables/{table}/join?region=R&exclude=ID,ID`: the node a player should use
//!   (any token for the table): the least-loaded serving node of region `R` (default: this
//!   node's region), else the least-loaded anywhere, then every other serving node in order;
//! - `GET /api/v1/tables/{table}/sessions`: an operator lists the table's WHIP and WHEP sessions;
//! - `DELETE /api/v1/tables/{table}/sessions/{session}`: an operator drops a session (the player
//!   reconnects and resumes by itself).

use super::{ApiError, ApiState};
use crate::auth::{self, Identity, TokenRole};
use crate::cluster::NodeState;
use crate::control::{DealerAction, TableHandle};
use crate::ids::{NodeId, SessionId, TableId};
use crate::protocol::Outcome;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/tables/{table}", get(snapshot))
        .route(
            "/api/v1/tables/{table}/join",
            get(join)
                .options(|| async { axum::http::StatusCode::NO_CONTENT })
                .layer(axum::middleware::map_response(cors)),
        )
        .route("/api/v1/tables/{table}/round/open", post(open))
        .route("/api/v1/tables/{table}/round/close", post(close))
        .route("/api/v1/tables/{table}/round/result", post(result))
        .route("/api/v1/tables/{table}/round/void", post(void))
        .route("/api/v1/tables/{table}/sessions", get(sessions))
        .route(
            "/api/v1/tables/{table}/sessions/{session}",
            delete(drop_session),
        )
}

const DEALERS: &[TokenRole] = &[TokenRole::Dealer, TokenRole::Operator];
const ANYONE: &[TokenRole] = &[TokenRole::Player, TokenRole::Dealer, TokenRole::Operator];

/// The token first (`401`), then its role and table (`403`), and only then whether the table
/// exists here (`404`): a caller without a token for the table learns nothing about it.
fn entitled(
    state: &ApiState,
    headers: &HeaderMap,
    raw: &str,
    roles: &[TokenRole],
    need: &'static str,
) -> Result<(TableHandle, Identity), ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let identity = state.tokens.verify(auth::bearer(header)?)?;
    let unknown = || ApiError::UnknownTable(raw.chars().take(80).collect());
    let id = TableId::parse(raw).map_err(|_| unknown())?;
    identity.require(&id, roles, need)?;
    let table = state.control.table(&id).ok_or_else(unknown)?;
    Ok((table.writer(), identity))
}

async fn snapshot(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (table, _) = entitled(&state, &headers, &raw, ANYONE, "player, dealer or operator")?;
    let owner = state.cluster.owner(&table.id);
    let mut body = serde_json::to_value(table.snapshot().await?)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    body["owner"] = serde_json::json!(owner);
    Ok(Json(body).into_response())
}

/// CORS on the join answer, so a page served by one node can ask another.
async fn cors(mut response: Response) -> Response {
    use axum::http::{HeaderValue, header};
    let h = response.headers_mut();
    super::resource::allow_any_origin(h, "Authorization");
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, OPTIONS"),
    );
    response
}

#[derive(Deserialize)]
struct JoinQuery {
    /// The player's region; this node's when absent.
    region: Option<String>,
    /// Node ids to leave out, comma-separated (a node the client just lost).
    exclude: Option<String>,
}

async fn join(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(query): Query<JoinQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (table, _) = entitled(&state, &headers, &raw, ANYONE, "player, dealer or operator")?;
    let view = &state.cluster;
    let region = query.region.unwrap_or_else(|| view.region.clone());
    if region.len() > 64 {
        return Err(ApiError::BadRequest("region: at most 64 characters".into()));
    }
    let mut exclude = Vec::new();
    for id in query.exclude.iter().flat_map(|e| e.split(',')) {
        let id = id.trim();
        if id.is_empty() {
            continue;
        }
        exclude.push(NodeId::parse(id).map_err(|e| ApiError::BadRequest(format!("exclude: {e}")))?);
    }
    if view.state() != NodeState::Serving {
        exclude.push(view.me.clone());
    }
    let order = view.join_order(&table.id, &region, &exclude);
    let Some(first) = order.first() else {
        return Err(ApiError::Unavailable(format!(
            "no serving node for table {} (every node is excluded, draining or gone); retry in a moment",
            table.id
        )));
    };
    let nodes: Vec<serde_json::Value> = order
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.node.id,
                "url": c.node.public_url,
                "region": c.node.region,
                "players": c.players,
                "reaches_origin": c.reaches_origin,
                "self": c.node.id == view.me,
            })
        })
        .collect();
    tracing::debug!(table_id = %table.id, %region, node = %first.node.id, "join: a player is sent to a node");
    Ok(Json(serde_json::json!({
        "table": table.id,
        "region": region,
        "node": first.node.id,
        "url": first.node.public_url,
        "self": first.node.id == view.me,
        "in_region": first.in_region,
        "nodes": nodes,
    }))
    .into_response())
}

async fn act(
    state: &ApiState,
    raw: &str,
    headers: &HeaderMap,
    action: DealerAction,
) -> Result<Response, ApiError> {
    let (table, who) = entitled(state, headers, raw, DEALERS, "dealer or operator")?;
    let what = format!("{action:?}");
    let round = table.dealer(action).await??;
    tracing::info!(table_id = %table.id, user = %who.user, %round, action = %what, "dealer action over HTTP");
    Ok(Json(serde_json::json!({ "round": round })).into_response())
}

async fn open(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    act(&state, &raw, &headers, DealerAction::Open).await
}

async fn close(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    act(&state, &raw, &headers, DealerAction::Close).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultBody {
    outcome: Outcome,
    #[serde(default)]
    media_ts: Option<u64>,
    #[serde(default)]
    media_clock: Option<u32>,
    #[serde(default)]
    captured_at: Option<u64>,
}

async fn result(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ResultBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    // Authorize before reading the body, so a stranger learns nothing from its errors.
    let (table, who) = entitled(&state, &headers, &raw, DEALERS, "dealer or operator")?;
    let Json(body) = body.map_err(|e| {
        ApiError::BadRequest(format!(
            "{}; send {{\"outcome\": \"banker\"}} as application/json",
            e.body_text()
        ))
    })?;
    // The frame it belongs to, named here, where the dealer's video arrives (`frame_clock`).
    let (media_ts, media_clock) =
        crate::control::frame_fields(body.media_ts, body.media_clock, || {
            state.media.frames.name_result(&table.id, body.captured_at)
        });
    let round = table
        .dealer(DealerAction::Result {
            outcome: body.outcome,
            media_ts,
            media_clock,
            captured_at: body.captured_at,
        })
        .await??;
    tracing::info!(table_id = %table.id, user = %who.user, %round, ?media_ts, ?media_clock, captured_at = ?body.captured_at, "dealer result over HTTP");
    Ok(Json(
        serde_json::json!({ "round": round, "media_ts": media_ts, "media_clock": media_clock }),
    )
    .into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct VoidBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn void(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    entitled(&state, &headers, &raw, DEALERS, "dealer or operator")?;
    let body: VoidBody = if body.iter().all(u8::is_ascii_whitespace) {
        VoidBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "{e}; send nothing, or {{\"reason\": \"...\"}} as application/json"
            ))
        })?
    };
    act(
        &state,
        &raw,
        &headers,
        DealerAction::Void {
            reason: body.reason,
        },
    )
    .await
}

async fn sessions(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (handle, _) = entitled(&state, &headers, &raw, &[TokenRole::Operator], "operator")?;
    Ok(Json(state.media.sessions(Some(&handle.id)).await).into_response())
}

async fn drop_session(
    State(state): State<ApiState>,
    Path((raw, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (handle, who) = entitled(&state, &headers, &raw, &[TokenRole::Operator], "operator")?;
    let session =
        SessionId::parse(&session).map_err(|e| ApiError::BadRequest(format!("session id: {e}")))?;
    // An operator of this table drops only this table's sessions.
    let on_table = state
        .media
        .sessions(Some(&handle.id))
        .await
        .iter()
        .any(|s| s.session == session);
    if !on_table {
        return Err(crate::media::MediaError::NoSession(session.to_string()).into());
    }
    state
        .media
        .kick(&session, format!("dropped by operator {}", who.user))
        .await?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}
