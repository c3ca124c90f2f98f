//! `POST /api/v1/demo/token`: `{"role","table"}` → `{"token"}`, so the demo pages work without a
//! token issuer. The route exists only with `[auth] demo = true`, and even then it hands out
//! little:
//!
//! - tokens only for the tables in `[auth] demo_tables` (else `403`; `404` for one of them this
//!   node does not serve);
//! - dealer tokens only to a client whose TCP peer address is in `[auth] demo_dealer_networks`
//!   (loopback by default), and never through the extra plain listener, where every client is a
//!   proxy (else `403`); player tokens to anyone;
//! - operator tokens never (`403`);
//! - the node picks the user name; a request naming one is refused (`400`).
//!
//! The peer address is the one the listener accepted (axum's `ConnectInfo`); headers such as
//! `X-Forwarded-For` are never read.

use super::{ApiError, ApiState};
use crate::auth::TokenRole;
use crate::config::{AuthConfig, IpNetwork};
use crate::ids::{TableId, UserId};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a demo token is good for.
pub const DEMO_TOKEN_TTL: Duration = Duration::from_secs(4 * 3600);

/// What demo mode may hand out: `[auth] demo_dealer_networks` and `[auth] demo_tables`.
#[derive(Debug, Clone)]
pub struct DemoPolicy {
    pub dealer_networks: Vec<IpNetwork>,
    pub tables: BTreeSet<TableId>,
}

impl DemoPolicy {
    pub fn from_config(auth: &AuthConfig) -> Self {
        Self {
            dealer_networks: auth.demo_dealer_networks.clone(),
            tables: auth.demo_tables.iter().cloned().collect(),
        }
    }

    /// One sentence for the start-up warning: exactly what demo mode hands out, and to whom.
    pub fn describe(&self) -> String {
        let list = |items: Vec<String>| {
            if items.is_empty() {
                "none".to_owned()
            } else {
                items.join(", ")
            }
        };
        let tables = list(self.tables.iter().map(|t| t.to_string()).collect());
        let networks = list(self.dealer_networks.iter().map(|n| n.to_string()).collect());
        let who = if self.dealer_networks.iter().all(IpNetwork::is_loopback) {
            "this machine only"
        } else {
            "NOT ONLY THIS MACHINE"
        };
        format!(
            "POST /api/v1/demo/token hands player tokens for tables [{tables}] ([auth] demo_tables) to anyone who reaches this node, \
             and dealer tokens for them to clients from [{networks}] ([auth] demo_dealer_networks: {who}), \
             under user names the node picks, for {}h; never operator tokens, and never dealer tokens through [http] plain_listen",
            DEMO_TOKEN_TTL.as_secs() / 3600
        )
    }

    fn dealer_allowed(&self, peer: SocketAddr) -> bool {
        self.dealer_networks.iter().any(|n| n.contains(peer.ip()))
    }
}

/// Marks requests that came through the extra plain listener (`[http] plain_listen`), which
/// stands behind a TLS-terminating proxy: the peer address there is the proxy's.
#[derive(Debug, Clone, Copy)]
pub struct BehindProxy;

#[derive(Debug, Deserialize)]
struct DemoTokenRequest {
    role: String,
    table: String,
    /// Whether the request named a user (with any value, even `null`): refused, the node picks
    /// names.
    #[serde(default, deserialize_with = "present")]
    user: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

pub fn routes(policy: DemoPolicy) -> Router<ApiState> {
    Router::new()
        .route("/api/v1/demo/token", post(token))
        .layer(Extension(Arc::new(policy)))
}

async fn token(
    State(state): State<ApiState>,
    Extension(policy): Extension<Arc<DemoPolicy>>,
    // `ConnectInfo` lives in the request's extensions; absent when a listener was served without it.
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    proxy: Option<Extension<BehindProxy>>,
    body: Result<Json<DemoTokenRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let peer = peer.map(|Extension(ConnectInfo(p))| p);
    let Json(req) = body.map_err(|e| {
        ApiError::BadRequest(format!(
            "{}; send {{\"role\":\"player\",\"table\":\"demo\"}}",
            e.body_text()
        ))
    })?;
    if req.user {
        return Err(ApiError::BadRequest(
            "demo tokens carry a user name the node picks; leave out \"user\" (for a token with your own name use `tablecast token --user NAME`)".into(),
        ));
    }
    let role: TokenRole = req.role.parse().map_err(ApiError::BadRequest)?;
    if role == TokenRole::Operator {
        return Err(ApiError::Forbidden(
            "demo tokens are for dealers and players; use `tablecast token` for operators".into(),
        ));
    }
    let requested: String = req.table.chars().take(80).collect();
    let table = TableId::parse(&req.table)
        .ok()
        .filter(|t| policy.tables.contains(t))
        .ok_or_else(|| {
            ApiError::Forbidden(format!(
                "{requested:?} is not a demo table (demo tokens are only for [auth] demo_tables); use `tablecast token --table {requested}`"
            ))
        })?;
    if role == TokenRole::Dealer {
        refuse_remote_dealer(&policy, peer, proxy.is_some())?;
    }
    if !state.tables.contains(&table) {
        return Err(ApiError::UnknownTable(table.to_string()));
    }
    let user = UserId::parse(&format!(
        "{}-{}",
        role,
        hex::encode(rand::random::<[u8; 4]>())
    ))
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let token = state
        .tokens
        .issue(role, table.as_str(), &user, DEMO_TOKEN_TTL)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::info!(%table, %user, %role, peer = ?peer, "issued a demo token");
    Ok(Json(serde_json::json!({
        "token": token,
        "role": role.as_str(),
        "table": table.as_str(),
        "user": user.as_str(),
        "expires_in": DEMO_TOKEN_TTL.as_secs(),
    })))
}

/// A demo dealer token only for a peer in `demo_dealer_networks`, straight to a main listener.
/// No peer address (a listener served without `ConnectInfo`) is a refusal.
fn refuse_remote_dealer(
    policy: &DemoPolicy,
    peer: Option<SocketAddr>,
    behind_proxy: bool,
) -> Result<(), ApiError> {
    const FIX: &str = "get a dealer token with `tablecast token --role dealer --table TABLE` on the node, \
                       or add your network to [auth] demo_dealer_networks";
    if behind_proxy {
        return Err(ApiError::Forbidden(format!(
            "demo dealer tokens are not handed out through [http] plain_listen, where every client looks like the proxy; {FIX}"
        )));
    }
    match peer {
        Some(peer) if policy.dealer_allowed(peer) => Ok(()),
        Some(peer) => {
            tracing::warn!(%peer, "refused a demo dealer token to a client outside [auth] demo_dealer_networks");
            Err(ApiError::Forbidden(format!(
                "demo dealer tokens are only for clients in [auth] demo_dealer_networks, and {} is not; {FIX}",
                peer.ip().to_canonical()
            )))
        }
        None => Err(ApiError::Forbidden(format!(
            "this listener does not know the client's address; {FIX}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(networks: &[&str]) -> DemoPolicy {
        DemoPolicy {
            dealer_networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
            tables: [TableId::parse("demo").unwrap()].into(),
        }
    }

    #[test]
    fn dealers_only_from_the_listed_networks_and_never_behind_the_proxy() {
        let loopback = policy(&["127.0.0.0/8", "::1/128"]);
        let addr = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        for ok in ["127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            assert!(
                refuse_remote_dealer(&loopback, addr(ok), false).is_ok(),
                "{ok}"
            );
        }
        for refused in [
            "10.1.2.3:5000",
            "[::ffff:192.168.1.9]:5000",
            "[fe80::1]:5000",
        ] {
            let e = refuse_remote_dealer(&loopback, addr(refused), false).unwrap_err();
            assert_eq!(e.status(), 403, "{refused}");
            assert!(e.to_string().contains("tablecast token"), "{e}");
            assert!(e.to_string().contains("demo_dealer_networks"), "{e}");
        }
        assert!(refuse_remote_dealer(&loopback, addr("127.0.0.1:1"), true).is_err());
        assert!(refuse_remote_dealer(&loopback, None, false).is_err());
        assert!(refuse_remote_dealer(&policy(&[]), addr("127.0.0.1:1"), false).is_err());
        let lan = policy(&["192.168.1.0/24"]);
        assert!(refuse_remote_dealer(&lan, addr("192.168.1.9:1"), false).is_ok());
    }

    #[test]
    fn the_warning_says_what_is_handed_out_and_to_whom() {
        let text = policy(&["127.0.0.0/8", "::1/128"]).describe();
        for needle in [
            "[demo]",
            "127.0.0.0/8, ::1/128",
            "this machine only",
            "never operator",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert!(
            policy(&["0.0.0.0/0"])
                .describe()
                .contains("NOT ONLY THIS MACHINE")
        );
    }
}
