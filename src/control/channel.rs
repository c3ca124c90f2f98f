//! `control` data channels: the media workers call this [`ControlHook`] on their own threads.
//! Each message is read by its `ControlSession` right there (parse, `ping`, limits) and only table commands
//! travel on to the table's actor, so a flooding player costs its own worker, not the table.

use super::session::{ControlSession, Speaker, Step};
use super::{ChannelEntry, ControlPlane, Outlet, server_ms};
use crate::media::{ControlChannel, ControlHook};
use std::sync::Arc;
use std::time::Instant;
use tracing::{info, warn};

impl ControlHook for ControlPlane {
    fn max_message_bytes(&self) -> usize {
        self.limits.max_message_bytes
    }

    fn opened(&self, ch: ControlChannel<'_>) {
        let Some(table) = self.table(ch.table) else {
            return;
        };
        let speaker = Speaker {
            user: ch.user.clone(),
            role: ch.token_role,
        };
        let session = ControlSession::new(
            self.next_conn(),
            ch.table.clone(),
            Some(speaker),
            &self.limits,
            Instant::now(),
        );
        self.channel_shard(ch.session)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ch.session.clone(), ChannelEntry { session, table });
    }

    fn message(&self, ch: ControlChannel<'_>, data: &[u8]) {
        // Parsed under this worker's own shard lock: no other worker waits for it.
        let (conn, step, table) = {
            let mut channels = self
                .channel_shard(ch.session)
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let Some(entry) = channels.get_mut(ch.session) else {
                return;
            };
            let step = entry
                .session
                .on_message(data, &self.tokens, Instant::now(), server_ms());
            (entry.session.conn, step, entry.table.clone())
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
                if !table.attach(
                    conn,
                    speaker.user,
                    Some(Outlet::Channel(ch.session.clone())),
                    resume_after_seq,
                ) && let Some(media) = media
                {
                    media.control_send(ch.session, Arc::from(unavailable(table.id())));
                }
            }
            Step::Command { speaker, mut msg } => {
                self.name_result_frame(table.id(), &mut msg);
                if !table.writer().command(conn, speaker.user, msg)
                    && let Some(media) = media
                {
                    media.control_send(ch.session, Arc::from(unavailable(table.id())));
                }
            }
            Step::View {
                session,
                user,
                view,
            } => self.set_view(session.as_ref().unwrap_or(ch.session), &user, view, None),
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
        let entry = self
            .channel_shard(ch.session)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(ch.session);
        if let Some(entry) = entry
            && entry.session.attached()
        {
            info!(session = %ch.session, table_id = %ch.table, "control channel left the table");
            entry.table.detach(entry.session.conn);
        }
    }
}

/// The `error` a client gets when its table has stopped, or cannot take more right now.
pub(crate) fn unavailable(table: &crate::ids::TableId) -> String {
    crate::protocol::encode(&crate::protocol::Reply::Error {
        id: None,
        code: crate::protocol::ErrorCode::Unavailable,
        message: format!(
            "table {table} cannot take this right now (it is moving to another node, or overloaded); send it again in a moment"
        ),
    })
}
