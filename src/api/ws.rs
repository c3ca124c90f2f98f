//! `GET /ws/{table}`: the control protocol over a WebSocket, for players whose data channel
//! cannot be had and for consoles. The socket's first message must be `hello` with a token
//! (browsers cannot set headers on a WebSocket); everything after is exactly as on a `control`
//! data channel, read by the same `control::edge` code.

use super::{ApiError, ApiState};
use crate::control::edge::{Edge, Step};
use crate::control::{self, ConnId, ControlPlane, Outlet, TableHandle, TableMsg};
use crate::ids::TableId;
use crate::protocol::{self, ErrorCode, Reply};
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
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
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let id = TableId::parse(&table)
        .ok()
        .filter(|t| state.control.table(t).is_some())
        .ok_or_else(|| ApiError::UnknownTable(table.chars().take(80).collect()))?;
    let plane = state.control.clone();
    Ok(ws
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| {
            let conn = plane.next_conn();
            let span = info_span!("ws", table_id = %id, %conn, user = tracing::field::Empty);
            serve(plane, id, conn, socket).instrument(span)
        }))
}

async fn serve(plane: Arc<ControlPlane>, id: TableId, conn: ConnId, mut socket: WebSocket) {
    let Some(table) = plane.table(&id).cloned() else {
        return;
    };
    let limits = plane.limits().clone();
    let mut edge = Edge::new(conn, id.clone(), None, &limits, Instant::now());
    let (tx, mut rx) = mpsc::channel::<Arc<str>>(control::SOCKET_QUEUE);
    // Handed to the table on the first `hello`; from then on the table holds the only sender,
    // so `rx` ends when the table drops this member.
    let mut outlet = Some(tx);
    let hello_deadline =
        tokio::time::Instant::now() + Duration::from_secs(limits.hello_timeout_secs.max(1));
    debug!("WebSocket open");
    let reason: String = loop {
        tokio::select! {
            frame = socket.recv() => {
                let data = match frame {
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break String::new(),
                    Some(Err(e)) => { debug!(error = %e, "WebSocket read failed"); break String::new() }
                };
                match edge.on_message(&data, plane.tokens(), Instant::now(), control::server_ms()) {
                    Step::Reply(text) => {
                        if socket.send(Message::Text(text.into())).await.is_err() {
                            break String::new();
                        }
                    }
                    Step::Attach { speaker, resume_after_seq } => {
                        tracing::Span::current().record("user", speaker.user.as_str());
                        let sent = table.send(TableMsg::Attach {
                            conn,
                            user: speaker.user,
                            outlet: outlet.take().map(Outlet::Socket),
                            resume_after_seq,
                        });
                        if !sent {
                            break control::TableUnavailable(id.clone()).to_string();
                        }
                    }
                    Step::Command { speaker, msg } => {
                        if !table.send(TableMsg::Command { conn, user: speaker.user, msg }) {
                            break control::TableUnavailable(id.clone()).to_string();
                        }
                    }
                    Step::Close(reason) => break reason,
                }
            }
            out = rx.recv(), if outlet.is_none() => match out {
                Some(text) => {
                    if socket.send(Message::Text(text.as_ref().into())).await.is_err() {
                        break String::new();
                    }
                }
                None => break "this connection fell too far behind the table; reconnect and resume from your last seq".into(),
            },
            () = tokio::time::sleep_until(hello_deadline), if !edge.attached() => {
                break format!("no hello within {} s; send {{\"type\":\"hello\",\"token\":\"…\"}} first", limits.hello_timeout_secs);
            }
        }
    };
    detach(&table, &edge);
    if !reason.is_empty() {
        info!(%reason, "closing WebSocket");
        let notice = protocol::encode(&Reply::Error {
            id: None,
            code: ErrorCode::RateLimited,
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

fn detach(table: &TableHandle, edge: &Edge) {
    if edge.attached() {
        table.send(TableMsg::Detach { conn: edge.conn });
    }
}
