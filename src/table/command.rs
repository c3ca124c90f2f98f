//! `Table::handle_command`: one entry point for every table command a connection can send, so
//! the actor's session code is a parse, a role check and one call.

use super::{DealerError, PlaceBet, Table};
use crate::ids::{BetId, RoundId, UserId};
use crate::protocol::{ClientMessage, Reply, ServerTime};

impl Table {
    /// Any table command from a connection, already authorised by the caller (check
    /// [`ClientMessage::needs_dealer`]). Dealer commands are answered privately with `ok{id}` or
    /// `error{id, code, message}`. Returns false for `hello`, `ping` and `video.view`, which
    /// are the session's business.
    pub fn handle_command(&mut self, now: ServerTime, user: &UserId, msg: ClientMessage) -> bool {
        let dealer = |table: &mut Self, id: BetId, result: Result<RoundId, DealerError>| {
            let reply = match result {
                Ok(round) => Reply::Ok {
                    id,
                    round: Some(round),
                },
                Err(e) => Reply::Error {
                    id: Some(id),
                    code: e.code(),
                    message: e.to_string(),
                },
            };
            table.outbox.reply(user.clone(), reply);
        };
        match msg {
            ClientMessage::Hello { .. }
            | ClientMessage::Ping { .. }
            | ClientMessage::VideoView { .. } => return false,
            ClientMessage::BetPlace {
                id,
                round,
                spot,
                amount,
            } => self.handle_bet(
                now,
                user,
                PlaceBet {
                    id,
                    round,
                    spot,
                    amount,
                },
            ),
            ClientMessage::BetCancel { id } => self.handle_cancel(now, user, &id),
            ClientMessage::Chat { id, text } => self.handle_chat(now, user, &id, &text),
            ClientMessage::DealerOpen { id } => {
                let r = self.handle_open(now);
                dealer(self, id, r)
            }
            ClientMessage::DealerClose { id } => {
                let r = self.handle_close(now);
                dealer(self, id, r)
            }
            ClientMessage::DealerResult {
                id,
                outcome,
                media_ts,
                media_clock,
                ..
            } => {
                let r = self.handle_result(now, outcome, media_ts, media_clock);
                dealer(self, id, r)
            }
            ClientMessage::DealerVoid { id, reason } => {
                let r = self.handle_void(now, reason.as_deref());
                dealer(self, id, r)
            }
            ClientMessage::OperatorMute {
                id,
                user: target,
                muted,
            } => {
                self.handle_mute(now, &target, muted);
                self.outbox
                    .reply(user.clone(), Reply::Ok { id, round: None });
            }
        }
        true
    }
}
