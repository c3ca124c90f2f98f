//! `control` data channels: the media workers call this [`ControlHook`] on their own threads.
//! Each message is read by its `ControlSession` right there (parse, `ping`, limits) and only table commands
//! travel on to the table's actor, so a flooding player costs its own worker, not the table.

use super::session::{ControlSession, Speaker, Step};
use super::{ControlPlane, Outlet, TableMsg, server_ms};
use crate::media::{ControlChannel, ControlHook};
use std::sync::Arc;
use std::time::Instant;
use tracing::{info, warn};

impl ControlHook for ControlPlane {
    fn max_message_bytes(&self) -> usize {
        self.limits.max_message_bytes
    }

    fn opened(&self, ch: ControlChannel<'_>) {
        if self.table(ch.table).is_none() {
            return;
        }
        let speaker = Speaker {
            user: ch.user.clone(),
            role: ch.token_role,
        };
        let conn_state = ControlSession::new(
            self.next_conn(),
            ch.table.clone(),
            Some(speaker),
            &self.limits,
            Instant::now(),
        );
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ch.session.clone(), conn_state);
    }

    fn message(&self, ch: ControlChannel<'_>, data: &[u8]) {
        let Some(table) = self.table(ch.table) else {
            return;
        };
        let (conn, step) = {
            let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            let Some(conn_state) = channels.get_mut(ch.session) else {
                return;
            };
            let step = conn_state.on_message(data, &self.tokens, Instant::now(), server_ms());
            (conn_state.conn, step)
        };
        let media = self.media.get();
        match step {
            Step::Reply(text) => {
                if let Some(media) = media {
                    media.control_send(ch.session, Arc::from(text));
                }
            }
            Step::Attach {
                speaker,
                resume_after_seq,
            } => {
                table.send(TableMsg::Attach {
                    conn,
                    user: speaker.user,
                    outlet: Some(Outlet::Channel(ch.session.clone())),
                    resume_after_seq,
                });
            }
            Step::Command { speaker, msg } => {
                if !table.send(TableMsg::Command {
                    conn,
                    user: speaker.user,
                    msg,
                }) && let Some(media) = media
                {
                    let text = unavailable(&table.id);
                    media.control_send(ch.session, Arc::from(text));
                }
            }
            Step::Close { code, reason } => {
                warn!(session = %ch.session, table_id = %ch.table, user = %ch.user, %reason, "closing a control connection");
                if let Some(media) = media {
                    let notice = crate::protocol::encode(&crate::protocol::Reply::Error {
                        id: None,
                        code,
                        message: reason.clone(),
                    });
                    media.control_send(ch.session, Arc::from(notice));
                    media.kick_later(ch.session, reason);
                }
            }
        }
    }

    fn closed(&self, ch: ControlChannel<'_>) {
        let conn_state = self
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(ch.session);
        if let (Some(conn_state), Some(table)) = (conn_state, self.table(ch.table))
            && conn_state.attached()
        {
            info!(session = %ch.session, table_id = %ch.table, "control channel left the table");
            table.send(TableMsg::Detach { conn: conn_state.conn });
        }
    }
}

/// The `error` a client gets when its table has stopped.
pub(crate) fn unavailable(table: &crate::ids::TableId) -> String {
    crate::protocol::encode(&crate::protocol::Reply::Error {
        id: None,
        code: crate::protocol::ErrorCode::InvalidCommand,
        message: super::TableUnavailable(table.clone()).to_string(),
    })
}
