//! Tokens: JWTs carrying who (`sub`), as what (`role`) and for which table (`table`).
//!
//! - `keys`: the node's key ring. One primary HS256 secret (`[auth] secret`, or one generated
//!   once into `<data.dir>/auth.secret`), plus any number of `[[auth.keys]]`, each with an id
//!   that tokens name in their `kid` header: HS256 secrets, or ES256 public keys whose private
//!   half stays with the operator's backend. `iss` and `aud` are checked when configured.
//! - this file: roles, claims, the verified [`Identity`] and why a token was refused.
//!
//! An operator token may name the table `*`, meaning every table.

pub(crate) mod keys;

pub use keys::{TokenDigest, TokenSetupError, Tokens};

use crate::ids::{TableId, UserId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The table claim of an operator token valid for every table.
pub const ANY_TABLE: &str = "*";

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Publishes a table's cameras (WHIP).
    Dealer,
    /// Watches a table (WHEP) and bets.
    Player,
    /// Runs the node: may do anything on any table it is issued for.
    Operator,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Dealer => "dealer",
            TokenRole::Player => "player",
            TokenRole::Operator => "operator",
        }
    }
}

impl fmt::Display for TokenRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TokenRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dealer" => Ok(TokenRole::Dealer),
            "player" => Ok(TokenRole::Player),
            "operator" => Ok(TokenRole::Operator),
            other => Err(format!(
                "unknown role {other:?}; use dealer, player or operator"
            )),
        }
    }
}

/// The JWT claims, as they travel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: TokenRole,
    pub table: String,
    pub iat: u64,
    pub exp: u64,
    /// Who issued it; checked against `[auth] issuer` when that is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Whom it is for; checked against `[auth] audience` when that is set (jsonwebtoken reads it
    /// from the raw claims, so a list is fine too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
}

/// Which tables a verified token is good for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableScope {
    One(TableId),
    /// Operator tokens issued for `*`.
    Any,
}

/// A verified token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: UserId,
    pub role: TokenRole,
    pub scope: TableScope,
    /// The token itself, hashed: a WHIP/WHEP session is bound to the token that opened it.
    pub token: TokenDigest,
    /// Past its `exp` (only [`Tokens::verify_any_age`] lets such a token through).
    pub expired: bool,
}

/// Why a request's token was refused. `Missing`, `Malformed` and `Expired` are `401`;
/// `WrongRole` and `WrongTable` are `403`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("no token: send Authorization: Bearer <token> (get one with `tablecast token`)")]
    Missing,
    #[error("invalid token ({0}); get a new one with `tablecast token`")]
    Malformed(String),
    #[error("token expired; get a new one with `tablecast token`")]
    Expired,
    #[error(
        "the token names key {0:?}, which this node does not have; add it to [[auth.keys]] or sign with a key the node has"
    )]
    UnknownKey(String),
    #[error("a {have} token cannot do this; it needs a {need} token")]
    WrongRole { have: TokenRole, need: &'static str },
    #[error("this token is for table {token_table}, not {requested}; get a token for {requested}")]
    WrongTable {
        token_table: String,
        requested: TableId,
    },
}

impl AuthError {
    /// Whether the client should present different credentials (`401`) rather than being
    /// refused outright (`403`).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            AuthError::Missing
                | AuthError::Malformed(_)
                | AuthError::Expired
                | AuthError::UnknownKey(_)
        )
    }
}

impl Identity {
    /// Checks that this identity may act on `table` in one of `roles` (`need` names them for
    /// the error message).
    pub fn require(
        &self,
        table: &TableId,
        roles: &[TokenRole],
        need: &'static str,
    ) -> Result<(), AuthError> {
        if !roles.contains(&self.role) {
            return Err(AuthError::WrongRole {
                have: self.role,
                need,
            });
        }
        match &self.scope {
            TableScope::Any => Ok(()),
            TableScope::One(t) if t == table => Ok(()),
            TableScope::One(t) => Err(AuthError::WrongTable {
                token_table: t.to_string(),
                requested: table.clone(),
            }),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::Missing)?.trim();
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| AuthError::Malformed("use the Bearer scheme".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed("use the Bearer scheme".into()));
    }
    let token = token.trim();
    if token.is_empty() {
        Err(AuthError::Missing)
    } else {
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn user() -> UserId {
        UserId::parse("u1").unwrap()
    }

    fn table(s: &str) -> TableId {
        TableId::parse(s).unwrap()
    }

    #[test]
    fn a_token_round_trips_and_checks_role_and_table() {
        let tokens = Tokens::from_secret(b"0123456789abcdef0123456789abcdef");
        let t = tokens
            .issue(TokenRole::Dealer, "demo", &user(), Duration::from_secs(60))
            .unwrap();
        let id = tokens.verify(&t).unwrap();
        assert_eq!(id.role, TokenRole::Dealer);
        assert!(!id.expired);
        assert_eq!(id.token, TokenDigest::of(&t));
        assert!(
            id.require(&table("demo"), &[TokenRole::Dealer], "dealer")
                .is_ok()
        );
        assert!(matches!(
            id.require(&table("demo"), &[TokenRole::Player], "player"),
            Err(AuthError::WrongRole { .. })
        ));
        assert!(matches!(
            id.require(&table("other"), &[TokenRole::Dealer], "dealer"),
            Err(AuthError::WrongTable { .. })
        ));
    }

    #[test]
    fn only_operators_get_every_table() {
        let tokens = Tokens::from_secret(b"0123456789abcdef0123456789abcdef");
        assert!(
            tokens
                .issue(
                    TokenRole::Dealer,
                    ANY_TABLE,
                    &user(),
                    Duration::from_secs(60)
                )
                .is_err()
        );
        let t = tokens
            .issue(
                TokenRole::Operator,
                ANY_TABLE,
                &user(),
                Duration::from_secs(60),
            )
            .unwrap();
        let id = tokens.verify(&t).unwrap();
        assert!(
            id.require(&table("anything"), &[TokenRole::Operator], "operator")
                .is_ok()
        );
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer(None), Err(AuthError::Missing));
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Ok("abc"));
        assert!(matches!(
            bearer(Some("Basic abc")),
            Err(AuthError::Malformed(_))
        ));
        assert_eq!(
            bearer(Some("Bearer ")),
            Err(AuthError::Malformed("use the Bearer scheme".into()))
        );
    }
}
