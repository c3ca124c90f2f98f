//! Typed identifiers. Every ID in tablecast comes from one macro, so a `TableId` can never be
//! passed where a `SessionId` is meant, and none of them travels as a bare `String`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an identifier from outside was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {kind} {value:?}: use 1 to {max} characters from A-Z a-z 0-9 - _ .")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
    pub max: usize,
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        string_id!($(#[$meta])* $name, $kind, 64);
    };
    ($(#[$meta:meta])* $name:ident, $kind:literal, $max:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates an identifier that came from outside (URL, token, config, wire).
            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                let ok = !value.is_empty()
                    && value.len() <= $max
                    && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if ok {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(InvalidId { kind: $kind, value: value.chars().take(80).collect(), max: $max })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, InvalidId> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

string_id!(
    /// A table, as named in `config.toml` and in URLs (`/whip/{table}`).
    TableId, "table id"
);
string_id!(
    /// One camera of a table (`?camera=NAME`, default `main`).
    CameraId, "camera name"
);
string_id!(
    /// A WHIP or WHEP session (`Location: /whip/{table}/{session}`): `{worker}{random}-{node}`,
    /// the media worker as two hex digits, 128 random bits in hex, and the node that holds it,
    /// so that any node (or a load balancer) can send a PATCH or DELETE to that node.
    SessionId, "session id", 100
);
string_id!(
    /// A node of the cluster.
    NodeId, "node id"
);
string_id!(
    /// A player or dealer, from the token's `sub` claim.
    UserId, "user id"
);
string_id!(
    /// A client-chosen bet or command id (the idempotency key).
    BetId, "bet id"
);

impl CameraId {
    /// The camera a WHIP or WHEP request means when it names none.
    pub fn main() -> Self {
        Self("main".to_owned())
    }
}

impl SessionId {
    /// A fresh session id on media worker `worker` of node `node`.
    pub fn new(worker: usize, node: &NodeId) -> Self {
        let random = hex::encode(rand::random::<[u8; 16]>());
        Self(format!("{:02x}{random}-{node}", worker.min(0xff)))
    }

    /// The media worker it names (its first two hex digits).
    pub fn worker(&self) -> Option<usize> {
        usize::from_str_radix(self.0.get(..2)?, 16).ok()
    }

    /// The node it names: what follows the first `-` (the part before is hex digits).
    pub fn node(&self) -> Option<&str> {
        self.0
            .split_once('-')
            .map(|(_, node)| node)
            .filter(|n| !n.is_empty())
    }
}

/// A round of a table: numbered from 1, increasing by one per round.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Debug)]
#[serde(transparent)]
pub struct RoundId(pub u64);

impl fmt::Display for RoundId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_what_would_break_a_path_or_a_log_line() {
        assert!(TableId::parse("demo-1").is_ok());
        assert!(TableId::parse("").is_err());
        assert!(TableId::parse("../etc").is_err());
        assert!(TableId::parse("a b").is_err());
        assert!(TableId::parse(&"x".repeat(65)).is_err());
        let e = SessionId::parse("bad/id").unwrap_err();
        assert!(e.to_string().contains("session id"));
        assert!(e.to_string().contains("1 to 100 characters"), "{e}");
    }

    #[test]
    fn a_session_id_names_its_worker_and_node_whatever_the_node_id() {
        let longest = NodeId::parse(&format!("eu-west.{}", "n".repeat(56))).unwrap();
        for node in [NodeId::parse("a").unwrap(), longest] {
            let id = SessionId::new(0x2a, &node);
            let parsed = SessionId::parse(id.as_str()).expect("a session id parses back");
            assert_eq!(parsed.worker(), Some(0x2a));
            assert_eq!(parsed.node(), Some(node.as_str()));
            assert_ne!(id, SessionId::new(0x2a, &node), "each is random");
        }
        // An id of another shape names no node, and is simply not found.
        assert_eq!(SessionId::parse("00abcdef").unwrap().node(), None);
    }

    #[test]
    fn ids_round_trip_through_json_and_validate_on_the_way_in() {
        let t: TableId = serde_json::from_str("\"demo\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"demo\"");
        assert!(serde_json::from_str::<TableId>("\"no way\"").is_err());
    }
}
