//! The WHIP/WHEP resource rules (RFC 9725), shared by `/whip` and `/whep`.
//!
//! - `POST /{kind}/{table}[?camera=NAME]` with `application/sdp` → `201`, answer SDP, `Location`,
//!   `ETag`, `Accept-Patch`;
//! - `PATCH /{kind}/{table}/{session}` with `application/trickle-ice-sdpfrag` → `204` (trickle)
//!   or `200` with the new sdpfrag and ETag (ICE restart);
//! - `DELETE /{kind}/{table}/{session}` → `200`;
//! - `OPTIONS` on both → `204` with CORS and `Accept-Post` / `Accept-Patch`.
//!
//! With `[turn]` configured, a `201` carries one `Link: <turn:…>; rel="ice-server"; username=…;
//! credential=…; credential-type="password"` per TURN server (RFC 9725 §4.6), with credentials
//! made for the token's user. So does an `OPTIONS` on the endpoint that carries the same token
//! a `POST` would need: a client learns its TURN servers before it creates its peer connection
//! (tablecast.js does). An `OPTIONS` without a token (a browser's CORS pre-flight) gets none:
//! credentials go only to callers entitled to use them. Relays between nodes get none either.
//!
//! Checks run before the body is read, the token first so that nothing about a table leaks to
//! a caller without one: token (`401`), its role and table (`403`), the table (`404`), the
//! `[limits]` caps and setup rate (`429` with `Retry-After`), content type (`415`), then the
//! body, read up to the limit and no further (`413`).
//!
//! A session belongs to the token that opened it: `PATCH` and `DELETE` need that token (even
//! after it expired, so that OBS can still hang up after a 12-hour stream), a current token of
//! the same user, or a current operator token of the table. Anything else is `404`, exactly as
//! for a session that does not exist.

use super::{ApiError, ApiState};
use crate::auth::{self, Identity, TokenRole};
use crate::ids::{CameraId, SessionId, TableId};
use crate::media::{PatchOutcome, PatchRequest, Requester, Role, SessionRequest};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;

pub const SDP: &str = "application/sdp";
pub const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// What distinguishes WHIP from WHEP.
pub trait Endpoint: Send + Sync + 'static {
    /// First path segment: `whip` or `whep`.
    const KIND: &'static str;
    /// The media role of its sessions.
    const ROLE: Role;
    /// Token roles allowed to use it, and their names for error messages.
    const ROLES: &'static [TokenRole];
    const NEED: &'static str;
    /// Sessions are other nodes' pulls of a camera (the cascade), not players: served by the
    /// table's origin only, to node credentials only, outside the `[limits]` caps.
    const RELAY: bool = false;
}

/// The routes of one endpoint, with its body limit.
pub fn routes<E: Endpoint>(max_body: usize) -> Router<ApiState> {
    let collection = format!("/{}/{{table}}", E::KIND);
    let resource = format!("/{}/{{table}}/{{session}}", E::KIND);
    Router::new()
        .route(
            &collection,
            post(create::<E>).options(options_collection::<E>),
        )
        .route(
            &resource,
            axum::routing::patch(patch::<E>)
                .delete(delete::<E>)
                .options(options_resource),
        )
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::map_response(cors))
}

#[derive(Debug, Deserialize)]
pub struct CameraQuery {
    camera: Option<String>,
}

async fn create<E: Endpoint>(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<CameraQuery>, QueryRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let identity = authenticate(&state, req.headers(), false)?;
    let Path(table) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let table = known_table::<E>(&state, &identity, &table)?;
    let span = tracing::Span::current();
    span.record("table", table.as_str())
        .record("role", E::ROLE.as_str());
    if E::RELAY && !identity.user.as_str().starts_with(NODE_USER) {
        return Err(ApiError::Forbidden(format!(
            "only cluster nodes open relays (a node credential, user {NODE_USER}<id>); players use /whep/{table}"
        )));
    }
    // A player is served here, whichever node owns the table (the cascade pulls the video);
    // a dealer and a relay are sent to the owner, the table's media origin.
    let pulled = E::ROLE == Role::Subscriber && !E::RELAY;
    if !pulled && let Some(response) = to_owner::<E>(&state, &table, req.uri().query())? {
        return Ok(response);
    }
    let permit = if E::RELAY {
        None
    } else {
        let admitted =
            state
                .admission
                .session(&identity.user, client_ip(&req), std::time::Instant::now());
        match admitted {
            Ok(permit) => Some(permit),
            Err(refused) => return Err(crate::limits::held_back(refused).await.into()),
        }
    };
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let camera = match query.camera.as_deref() {
        None | Some("") => CameraId::main(),
        Some(c) => CameraId::parse(c).map_err(|e| ApiError::BadRequest(e.to_string()))?,
    };
    require_content_type(req.headers(), SDP)?;
    let offer_sdp = read_text(&state, req).await?;
    if pulled
        && state.cluster.clustered
        && state.control.local_handle(&table).is_none()
        && let Some(cascade) = &state.cascade
    {
        cascade.ensure(crate::media::peer::RouterKey {
            table: table.clone(),
            camera: camera.clone(),
        });
    }

    let answer = state
        .media
        .open(SessionRequest {
            role: E::ROLE,
            table: table.clone(),
            camera: camera.clone(),
            user: identity.user.clone(),
            token_role: identity.role,
            token: identity.token,
            permit,
            relay: E::RELAY,
            offer_sdp,
        })
        .await?;
    span.record("session", answer.session.as_str());
    tracing::info!(user = %identity.user, camera = %camera, "session opened");

    let location = format!("/{}/{}/{}", E::KIND, table, answer.session);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    headers.insert(header::LOCATION, header_value(&location)?);
    headers.insert(header::ETAG, header_value(&quote_etag(&answer.etag))?);
    headers.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    ice_server_links::<E>(&state, &identity, &mut headers)?;
    Ok((StatusCode::CREATED, headers, answer.answer_sdp).into_response())
}

/// One `Link: <url>; rel="ice-server"; …` per `[turn]` server, with credentials for this
/// identity's user (RFC 9725 §4.6). Nothing for relays between nodes, or without `[turn]`.
fn ice_server_links<E: Endpoint>(
    state: &ApiState,
    identity: &Identity,
    headers: &mut HeaderMap,
) -> Result<(), ApiError> {
    let Some(turn) = state.turn.as_ref().filter(|_| !E::RELAY) else {
        return Ok(());
    };
    for link in turn.link_headers(&identity.user, std::time::SystemTime::now()) {
        headers.append(header::LINK, header_value(&link)?);
    }
    Ok(())
}

async fn patch<E: Endpoint>(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let identity = authenticate(&state, req.headers(), true)?;
    let (table, session) = session_path::<E>(&state, &identity, path)?;
    if let Some(redirect) = to_session_node::<E>(&state, &table, &session)? {
        return Ok(redirect);
    }
    require_content_type(req.headers(), SDPFRAG)?;
    let if_match = req
        .headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let sdpfrag = read_text(&state, req).await?;
    let outcome = state
        .media
        .patch(PatchRequest {
            role: E::ROLE,
            table,
            session,
            if_match,
            sdpfrag,
            requester: Requester::from_identity(&identity),
        })
        .await?;
    Ok(match outcome {
        PatchOutcome::Trickled => StatusCode::NO_CONTENT.into_response(),
        PatchOutcome::Restarted { sdpfrag, etag } => {
            tracing::info!("ICE restarted");
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG));
            headers.insert(header::ETAG, header_value(&quote_etag(&etag))?);
            (StatusCode::OK, headers, sdpfrag).into_response()
        }
    })
}

async fn delete<E: Endpoint>(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let identity = authenticate(&state, &headers, true)?;
    let (table, session) = session_path::<E>(&state, &identity, path)?;
    if let Some(redirect) = to_session_node::<E>(&state, &table, &session)? {
        return Ok(redirect);
    }
    state
        .media
        .close(
            E::ROLE,
            &table,
            &session,
            Requester::from_identity(&identity),
        )
        .await?;
    tracing::info!("session closed by DELETE");
    Ok(StatusCode::OK.into_response())
}

/// `OPTIONS` on the endpoint: what it accepts, and with the token a `POST` needs, the TURN
/// servers (`Link` headers) the client should create its peer connection with. Without an
/// `Authorization` header (a CORS pre-flight) it is a plain `204`; with one, the token is
/// checked as for a `POST`, so a bad one fails here already.
async fn options_collection<E: Endpoint>(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut headers = HeaderMap::new();
    if request_headers.contains_key(header::AUTHORIZATION) {
        let identity = authenticate(&state, &request_headers, false)?;
        let Path(table) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        known_table::<E>(&state, &identity, &table)?;
        ice_server_links::<E>(&state, &identity, &mut headers)?;
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    headers.insert("accept-post", HeaderValue::from_static(SDP));
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

async fn options_resource() -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("PATCH, DELETE, OPTIONS"),
    );
    headers.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    (StatusCode::NO_CONTENT, headers).into_response()
}

/// CORS on every WHIP/WHEP response, errors included, so browser pages can read them.
async fn cors(mut response: Response) -> Response {
    let h = response.headers_mut();
    allow_any_origin(h, "Authorization, Content-Type, If-Match");
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Patch"),
    );
    h.entry(header::ACCESS_CONTROL_ALLOW_METHODS)
        .or_insert(HeaderValue::from_static("POST, PATCH, DELETE, OPTIONS"));
    response
}

/// Lets a page of any origin send `request_headers` and read the answer (cached for a day).
/// The caller says which methods.
pub(super) fn allow_any_origin(h: &mut HeaderMap, request_headers: &'static str) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(request_headers),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
}

/// `307 Temporary Redirect` to `location`: the client repeats the request there, method and
/// body kept.
fn redirect(location: &str) -> Result<Response, ApiError> {
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, header_value(location)?);
    Ok(response)
}

/// The user prefix of node credentials (`node.{id}`).
pub const NODE_USER: &str = "node.";

/// In a cluster, dealers publish to the table's owner, and relays pull from it: `307` to it,
/// with `Location` on its `[node] public_url`. `503` while the table has no owner (it is
/// moving).
fn to_owner<E: Endpoint>(
    state: &ApiState,
    table: &TableId,
    query: Option<&str>,
) -> Result<Option<Response>, ApiError> {
    let view = &state.cluster;
    if !view.clustered || state.control.local_handle(table).is_some() {
        return Ok(None);
    }
    let Some(base) = view.owner_elsewhere(table) else {
        return Err(ApiError::Unavailable(format!(
            "table {table} has no owner right now (it is moving to another node); try again in a second"
        )));
    };
    let mut location = format!("{}/{}/{}", base.trim_end_matches('/'), E::KIND, table);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        location.push('?');
        location.push_str(q);
    }
    tracing::debug!(%location, "media is served by the table's owner: redirecting");
    redirect(&location).map(Some)
}

/// A PATCH or DELETE for a session another node holds (a load balancer sent it here): `307`
/// to that node's public URL, with the same path. `None` when the session is this node's;
/// a node this node does not know leaves the session unknown here (`404`).
fn to_session_node<E: Endpoint>(
    state: &ApiState,
    table: &TableId,
    session: &SessionId,
) -> Result<Option<Response>, ApiError> {
    let view = &state.cluster;
    let Some(node) = session.node().filter(|n| *n != view.me.as_str()) else {
        return Ok(None);
    };
    let Some(holder) = view.nodes().into_iter().find(|n| n.id.as_str() == node) else {
        return Err(ApiError::Media(crate::media::MediaError::NoSession(
            session.to_string(),
        )));
    };
    let location = format!(
        "{}/{}/{}/{}",
        holder.public_url.trim_end_matches('/'),
        E::KIND,
        table,
        session
    );
    tracing::debug!(%location, "the session is on another node: redirecting");
    redirect(&location).map(Some)
}

/// The table of the URL, for a caller already authenticated: the token's role and table are
/// checked first (`403`), so only a caller entitled to the table learns whether it exists.
fn known_table<E: Endpoint>(
    state: &ApiState,
    identity: &Identity,
    raw: &str,
) -> Result<TableId, ApiError> {
    let table =
        TableId::parse(raw).map_err(|_| ApiError::UnknownTable(raw.chars().take(80).collect()))?;
    identity.require(&table, E::ROLES, E::NEED)?;
    if state.tables.contains(&table) {
        Ok(table)
    } else {
        Err(ApiError::UnknownTable(table.to_string()))
    }
}

fn session_path<E: Endpoint>(
    state: &ApiState,
    identity: &Identity,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(TableId, SessionId), ApiError> {
    let Path((table, session)) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let table = known_table::<E>(state, identity, &table)?;
    let span = tracing::Span::current();
    span.record("table", table.as_str());
    let session = SessionId::parse(&session).map_err(|_| {
        ApiError::Media(crate::media::MediaError::NoSession(
            session.chars().take(80).collect(),
        ))
    })?;
    span.record("session", session.as_str());
    Ok((table, session))
}

/// Verifies the bearer token (`401` without a good one). `existing_session`: PATCH/DELETE,
/// where a token past its expiry gets through marked `expired`, and then may touch only the
/// session it opened.
fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
    existing_session: bool,
) -> Result<Identity, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let token = auth::bearer(header)?;
    Ok(if existing_session {
        state.tokens.verify_any_age(token)?
    } else {
        state.tokens.verify(token)?
    })
}

/// The TCP peer's address (never a forwarded-for header: anyone can write one).
fn client_ip(req: &Request) -> std::net::IpAddr {
    req.extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// `415` unless the Content-Type's media type is `expected` (parameters and case ignored).
fn require_content_type(headers: &HeaderMap, expected: &'static str) -> Result<(), ApiError> {
    let got = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"))
        .unwrap_or("");
    let essence = got.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        let got = if got.is_empty() { "(none)" } else { got };
        Err(ApiError::UnsupportedMediaType {
            got: got.chars().take(80).collect(),
            expected,
        })
    }
}

/// Reads the body as UTF-8, at most `max_sdp_bytes` (the route's `DefaultBodyLimit`).
async fn read_text(state: &ApiState, req: Request) -> Result<String, ApiError> {
    let limit = state.max_sdp_bytes;
    let body = Bytes::from_request(req, &()).await.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            ApiError::PayloadTooLarge { limit }
        }
        other => ApiError::BadRequest(other.body_text()),
    })?;
    String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::BadRequest("body is not UTF-8 text".into()))
}

/// Entity tags travel quoted (`"abc"`); the media plane's may come bare.
fn quote_etag(etag: &str) -> String {
    if etag.starts_with('"') || etag.starts_with("W/\"") {
        etag.to_owned()
    } else {
        format!("\"{etag}\"")
    }
}

fn header_value(s: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(s)
        .map_err(|_| ApiError::Internal(format!("cannot put {s:?} in a header")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_ignores_parameters_and_case() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/SDP; charset=utf-8"),
        );
        assert!(require_content_type(&h, SDP).is_ok());
        assert!(require_content_type(&h, SDPFRAG).is_err());
        assert!(require_content_type(&HeaderMap::new(), SDP).is_err());
    }

    #[test]
    fn etags_are_quoted_once() {
        assert_eq!(quote_etag("abc"), "\"abc\"");
        assert_eq!(quote_etag("\"abc\""), "\"abc\"");
        assert_eq!(quote_etag("W/\"abc\""), "W/\"abc\"");
    }
}
