//! Typed identifiers. Every ID in tablecast comes from one macro, so a `TableId` can never be
//! passed where a `SessionId` is meant, and none of them travels as a bare `String`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an identifier from outside was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {kind} {value:?}: use 1 to 64 characters from A-Z a-z 0-9 - _ .")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates an identifier that came from outside (URL, token, config, wire).
            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                let ok = !value.is_empty()
                    && value.len() <= 64
                    && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if ok {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(InvalidId { kind: $kind, value: value.chars().take(80).collect() })
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
    /// A WHIP or WHEP session (`Location: /whip/{table}/{session}`).
    SessionId, "session id"
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
    /// A fresh random session id (128 bits, hex).
    pub fn random() -> Self {
        Self(hex::encode(rand::random::<[u8; 16]>()))
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
    }

    #[test]
    fn ids_round_trip_through_json_and_validate_on_the_way_in() {
        let t: TableId = serde_json::from_str("\"demo\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"demo\"");
        assert!(serde_json::from_str::<TableId>("\"no way\"").is_err());
    }
}
