//! `POST /api/v1/demo/token`: `{"role","table","user"?}` → `{"token"}`, so the demo pages work
//! without a token issuer. The route exists only with `[auth] demo = true`; anyone can then
//! become a dealer, so the node warns loudly at start.

use super::{ApiError, ApiState};
use crate::auth::TokenRole;
use crate::ids::{TableId, UserId};
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use std::time::Duration;

/// How long a demo token is good for.
pub const DEMO_TOKEN_TTL: Duration = Duration::from_secs(4 * 3600);

#[derive(Debug, Deserialize)]
struct DemoTokenRequest {
    role: String,
    table: String,
    user: Option<String>,
}

pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/demo/token", post(token))
}

async fn token(
    State(state): State<ApiState>,
    body: Result<Json<DemoTokenRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body.map_err(|e| {
        ApiError::BadRequest(format!(
            "{}; send {{\"role\":\"player\",\"table\":\"demo\"}}",
            e.body_text()
        ))
    })?;
    let role: TokenRole = req.role.parse().map_err(ApiError::BadRequest)?;
    if role == TokenRole::Operator {
        return Err(ApiError::Forbidden(
            "demo tokens are for dealers and players; use `tablecast token` for operators".into(),
        ));
    }
    let table = TableId::parse(&req.table)
        .ok()
        .filter(|t| state.tables.contains(t))
        .ok_or_else(|| ApiError::UnknownTable(req.table.chars().take(80).collect()))?;
    let user = match req.user.as_deref() {
        Some(u) if !u.is_empty() => {
            UserId::parse(u).map_err(|e| ApiError::BadRequest(e.to_string()))?
        }
        _ => UserId::parse(&format!(
            "{}-{}",
            role,
            hex::encode(rand::random::<[u8; 4]>())
        ))
        .map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    let token = state
        .tokens
        .issue(role, table.as_str(), &user, DEMO_TOKEN_TTL)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::info!(%table, %user, %role, "issued a demo token");
    Ok(Json(serde_json::json!({
        "token": token,
        "role": role.as_str(),
        "table": table.as_str(),
        "user": user.as_str(),
        "expires_in": DEMO_TOKEN_TTL.as_secs(),
    })))
}
