//! Table chat: length and content rules, operator mutes, and duplicate suppression.

use crate::ids::{BetId, UserId};
use crate::protocol::{CHAT_MAX_CHARS, ErrorCode};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How many recent chat ids per player are remembered to drop retries.
const RECENT_IDS: usize = 32;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Chat {
    muted: BTreeSet<UserId>,
    recent: BTreeMap<UserId, VecDeque<BetId>>,
}

/// What to do with a chat message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum ChatCheck {
    Post,
    /// A retry of a message already posted: drop it silently (its `chat` event carries the id).
    Duplicate,
    Refuse(ErrorCode, String),
}

impl Chat {
    pub fn check(&self, user: &UserId, id: &BetId, text: &str) -> ChatCheck {
        if self.recent.get(user).is_some_and(|ids| ids.contains(id)) {
            return ChatCheck::Duplicate;
        }
        if self.muted.contains(user) {
            return ChatCheck::Refuse(
                ErrorCode::Muted,
                "an operator has muted your chat on this table".into(),
            );
        }
        if text.trim().is_empty() {
            return ChatCheck::Refuse(ErrorCode::ChatEmpty, "chat text is empty".into());
        }
        let chars = text.chars().count();
        if chars > CHAT_MAX_CHARS {
            let msg = format!(
                "chat text is {chars} characters; the limit is {CHAT_MAX_CHARS}: shorten it"
            );
            return ChatCheck::Refuse(ErrorCode::ChatTooLong, msg);
        }
        if text.chars().any(char::is_control) {
            let msg = "chat text may not contain control characters (newlines, tabs …)".to_owned();
            return ChatCheck::Refuse(ErrorCode::InvalidMessage, msg);
        }
        ChatCheck::Post
    }

    /// Remembers a posted message's id (live and on replay).
    pub fn posted(&mut self, user: &UserId, id: &BetId) {
        let ids = self.recent.entry(user.clone()).or_default();
        if ids.len() >= RECENT_IDS {
            ids.pop_front();
        }
        ids.push_back(id.clone());
    }

    /// Mutes or unmutes; returns whether anything changed.
    pub fn set_muted(&mut self, user: &UserId, muted: bool) -> bool {
        if muted {
            self.muted.insert(user.clone())
        } else {
            self.muted.remove(user)
        }
    }

    pub fn is_muted(&self, user: &UserId) -> bool {
        self.muted.contains(user)
    }
}
