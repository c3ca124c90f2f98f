//! `GET /ws/{table}`: the control protocol over a WebSocket, for players whose data channel
//! cannot be had and for consoles. The socket's first message must be `hello` with a token
//! (browsers cannot set headers on a WebSocket); everything after is exactly as on a `control`
//! data channel, read by the same `control::session` code, except that a `video.view` must name
//! its WHEP session.

use super::{ApiError, ApiState};
use crate::control::session::{self, ControlSession, Step};
use crate::control::{self, ConnId, ControlPlane, Outlet, TableRef};
use crate::ids::TableId;
use crate::limits::Permit;
use crate::protocol::{self, ErrorCode, Reply};
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::response::Response;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span};

/// Frames larger than this are refused by the WebSocket layer itself (close code 1009); up to
/// it, a message over the protocol's 8 KiB limit gets an `error` event and the socket stays.
const MAX_FRAME_BYTES: usize = 64 * 1024;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/ws/{table}", get(upgrade))
}

async fn upgrade(
    State(state): State<ApiState>,
    Path(table): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // Caps first; the token comes in `hello`, and only a caller whose token is good for the
    // table learns whether it exists (see `serve`).
    let (open_permit, pending_permit) = match state.admission.websocket(peer.ip(), Instant::now()) {
        Ok(permits) => permits,
        Err(refused) => return Err(crate::limits::held_back(refused).await.into()),
    };
    let id = TableId::parse(&table).ok();
    let plane = state.control.clone();
    Ok(ws
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| {
            let conn = plane.next_conn();
            let span = info_span!("ws", table_id = %table.chars().take(64).collect::<String>(), %conn, %peer, user = tracing::field::Empty);
            let permits = Permits {
                _open: open_permit,
                pending: Some(pending_permit),
            };
            serve(plane, id, conn, socket, permits).instrument(span)
        }))
}

/// The socket's `[limits]` slots: held while open, and while it has not said `hello`.
struct Permits {
    _open: Permit,
    pending: Option<Permit>,
}

/// What the socket says last before closing.
struct Closing {
    code: ErrorCode,
    reason: String,
}

impl Closing {
    fn quietly() -> Self {
        Self {
            code: ErrorCode::RateLimited,
            reason: String::new(),
        }
    }

    fn because(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// A table id no table can have (ids are 1 to 64 characters): a socket on a URL that names no
/// valid table still reads its `hello`, so its token is judged before anything else.
const NO_SUCH_TABLE: &str = "-unparseable-table-id-";

async fn serve(
    plane: Arc<ControlPlane>,
    id: Option<TableId>,
    conn: ConnId,
    mut socket: WebSocket,
    mut permits: Permits,
) {
    let table: Option<TableRef> = id.as_ref().and_then(|id| plane.table(id));
    let conn_table = match &id {
        Some(id) => id.clone(),
        // NO_SUCH_TABLE is a valid id by construction, and `table` is None for it.
        None => match TableId::parse(NO_SUCH_TABLE) {
            Ok(t) => t,
            Err(_) => return,
        },
    };
    let limits = plane.limits().clone();
    let mut conn_state =
        ControlSession::new(conn, conn_table.clone(), None, &limits, Instant::now());
    let (tx, mut rx) = mpsc::channel::<Arc<str>>(control::SOCKET_QUEUE);
    // Handed to the table on the first `hello`; from then on the table holds the only sender,
    // so `rx` ends when the table drops this member.
    let mut outlet = Some(tx);
    // The `video.map`s of the WHEP session this socket's `video.view` names, from its worker.
    let (maps_tx, mut maps_rx) = mpsc::channel::<Arc<str>>(crate::media::video_map::MAP_QUEUE);
    let mut closing = plane.closing();
    let hello_deadline =
        tokio::time::Instant::now() + Duration::from_secs(limits.hello_timeout_secs.max(1));
    debug!("WebSocket open");
    let closing: Closing = loop {
        tokio::select! {
            frame = socket.recv() => {
                let data = match frame {
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break Closing::quietly(),
                    Some(Err(e)) => { debug!(error = %e, "WebSocket read failed"); break Closing::quietly() }
                };
                match conn_state.on_message(&data, plane.tokens(), Instant::now(), control::server_ms()) {
                    Step::Reply(text) => {
                        if socket.send(Message::Text(text.into())).await.is_err() {
                            break Closing::quietly();
                        }
                    }
                    Step::Attach { speaker, resume_after_seq } => {
                        // The token is good for this table id: now it may learn the table is not here.
                        let Some(table) = &table else {
                            break Closing::because(
                                ErrorCode::UnknownTable,
                                format!("no table {conn_table} on this node; check the table id in the URL"),
                            );
                        };
                        permits.pending = None;
                        tracing::Span::current().record("user", speaker.user.as_str());
                        let sent = table.attach(
                            conn,
                            speaker.user,
                            outlet.take().map(Outlet::Socket),
                            resume_after_seq,
                        );
                        if !sent {
                            break Closing::because(ErrorCode::Unavailable, control::TableUnavailable::Moving(conn_table.clone()).to_string());
                        }
                    }
                    Step::Command { speaker, mut msg } => {
                        let Some(table) = &table else { break Closing::quietly() };
                        plane.name_result_frame(table.id(), &mut msg);
                        if !table.writer().command(conn, speaker.user, msg) {
                            break Closing::because(ErrorCode::Unavailable, control::TableUnavailable::Moving(conn_table.clone()).to_string());
                        }
                    }
                    Step::View { session: Some(session), user, view } => plane.set_view(&session, &user, view, Some(maps_tx.clone())),
                    Step::View { session: None, .. } => {
                        if socket.send(Message::Text(session::view_needs_session().into())).await.is_err() {
                            break Closing::quietly();
                        }
                    }
                    Step::Close { code, reason } => break Closing::because(code, reason),
                }
            }
            Some(text) = maps_rx.recv() => {
                if socket.send(Message::Text(text.as_ref().into())).await.is_err() {
                    break Closing::quietly();
                }
            }
            out = rx.recv(), if outlet.is_none() => match out {
                Some(text) => {
                    if socket.send(Message::Text(text.as_ref().into())).await.is_err() {
                        break Closing::quietly();
                    }
                }
                None => break Closing::because(ErrorCode::RateLimited, "this connection fell too far behind the table; reconnect and resume from your last seq"),
            },
            Ok(()) = closing.changed() => {
                if *closing.borrow_and_update() {
                    break Closing::because(ErrorCode::Unavailable, "this node is shutting down; reconnect (to another node of the cluster) and resume from your last seq");
                }
            }
            () = tokio::time::sleep_until(hello_deadline), if !conn_state.attached() => {
                break Closing::because(ErrorCode::Unauthorized, format!("no hello within {} s; send {{\"type\":\"hello\",\"token\":\"…\"}} first", limits.hello_timeout_secs));
            }
        }
    };
    if let Some(table) = &table {
        detach(table, &conn_state);
    }
    let Closing { code, reason } = closing;
    if !reason.is_empty() {
        info!(%reason, "closing WebSocket");
        let notice = protocol::encode(&Reply::Error {
            id: None,
            code,
            message: reason.clone(),
        });
        let _ = socket.send(Message::Text(notice.into())).await;
        // Close reasons are limited to 123 bytes.
        let short: String = reason.chars().take(100).collect();
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code: 1008,
                reason: short.into(),
            })))
            .await;
        // Finish the closing handshake: read (and drop) what the client still sends until its
        // Close. Dropping the socket with unread data would reset the connection, and the
        // client could lose the reason before reading it.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(frame)) = socket.recv().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    debug!("WebSocket closed");
}

fn detach(table: &TableRef, conn_state: &ControlSession) {
    if conn_state.attached() {
        table.detach(conn_state.conn);
    }
}
