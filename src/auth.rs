//! Tokens: HS256 JWTs carrying who (`sub`), as what (`role`) and for which table (`table`).
//!
//! The secret comes from `[auth] secret` (or `TABLECAST_AUTH_SECRET`). When it is empty, a random
//! one is generated once and kept in `<data.dir>/auth.secret` (mode 0600), so tokens survive
//! restarts and `tablecast token` signs with the same secret as the running node.
//!
//! An operator token may name the table `*`, meaning every table.

use crate::config::AuthConfig;
use crate::ids::{TableId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
            AuthError::Missing | AuthError::Malformed(_) | AuthError::Expired
        )
    }
}

/// Why tokens could not be set up or issued.
#[derive(Debug, thiserror::Error)]
pub enum TokenSetupError {
    #[error("cannot create data dir {path}: {source}; set [data] dir to a writable directory")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot read or write the auth secret {path}: {source}; set [auth] secret, or fix the file's permissions"
    )]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the auth secret in {path} is empty; delete the file to generate a new one, or set [auth] secret"
    )]
    EmptySecretFile { path: PathBuf },
    #[error("invalid token request: {0}")]
    BadRequest(String),
    #[error("cannot sign token: {0}")]
    Sign(String),
}

/// Issues and verifies tokens with one secret.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// For PATCH/DELETE on an existing session: the token must be genuine, but may have expired
    /// since the session was created.
    validation_any_age: Validation,
}

impl Tokens {
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let mut validation_any_age = validation.clone();
        validation_any_age.validate_exp = false;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            validation_any_age,
        }
    }

    /// The node's tokens: `[auth] secret`, or the persisted secret under `data_dir`.
    pub fn from_config(auth: &AuthConfig, data_dir: &Path) -> Result<Self, TokenSetupError> {
        if !auth.secret.is_empty() {
            if auth.secret.len() < 32 {
                tracing::warn!(
                    "[auth] secret is shorter than 32 characters; use a long random secret"
                );
            }
            return Ok(Self::from_secret(auth.secret.as_bytes()));
        }
        let secret = persisted_secret(data_dir)?;
        Ok(Self::from_secret(secret.as_bytes()))
    }

    /// Signs a token for `user` as `role` on `table` (`*` for an operator on every table).
    pub fn issue(
        &self,
        role: TokenRole,
        table: &str,
        user: &UserId,
        ttl: Duration,
    ) -> Result<String, TokenSetupError> {
        if table != ANY_TABLE {
            TableId::parse(table).map_err(|e| TokenSetupError::BadRequest(e.to_string()))?;
        } else if role != TokenRole::Operator {
            return Err(TokenSetupError::BadRequest(
                "only operator tokens may be issued for table *".into(),
            ));
        }
        let iat = now_secs();
        let claims = Claims {
            sub: user.to_string(),
            role,
            table: table.to_owned(),
            iat,
            exp: iat.saturating_add(ttl.as_secs()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenSetupError::Sign(e.to_string()))
    }

    /// Verifies a token's signature, expiry and claims.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_with(token, &self.validation)
    }

    /// Verifies a token, accepting it after its expiry (for an existing session's PATCH/DELETE).
    pub fn verify_any_age(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_with(token, &self.validation_any_age)
    }

    fn verify_with(&self, token: &str, validation: &Validation) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => {
                    AuthError::Malformed("bad signature: signed with another secret".into())
                }
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Malformed(format!("missing claim {c}"))
                }
                ErrorKind::InvalidAlgorithm => AuthError::Malformed("not an HS256 token".into()),
                _ => AuthError::Malformed("not a tablecast JWT".into()),
            },
        )?;
        let claims = data.claims;
        let user = UserId::parse(&claims.sub).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let scope = if claims.table == ANY_TABLE && claims.role == TokenRole::Operator {
            TableScope::Any
        } else {
            TableScope::One(
                TableId::parse(&claims.table).map_err(|e| AuthError::Malformed(e.to_string()))?,
            )
        };
        Ok(Identity {
            user,
            role: claims.role,
            scope,
        })
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

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads `<data_dir>/auth.secret`, creating it (0600, 32 random bytes as hex) when absent.
fn persisted_secret(data_dir: &Path) -> Result<String, TokenSetupError> {
    std::fs::create_dir_all(data_dir).map_err(|source| TokenSetupError::DataDir {
        path: data_dir.into(),
        source,
    })?;
    let path = data_dir.join("auth.secret");
    let file_err = |source| TokenSetupError::SecretFile {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().is_empty() => {
            Err(TokenSetupError::EmptySecretFile { path: path.clone() })
        }
        Ok(s) => Ok(s.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = hex::encode(rand::random::<[u8; 32]>());
            write_private(&path, secret.as_bytes()).map_err(file_err)?;
            tracing::info!(path = %path.display(), "generated a new auth secret");
            Ok(secret)
        }
        Err(e) => Err(file_err(e)),
    }
}

/// Creates `path` with mode 0600 (owner only) and writes `contents`; fails if it exists.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn bad_tokens_are_told_apart() {
        let tokens = Tokens::from_secret(b"secret-one-secret-one-secret-one");
        let other = Tokens::from_secret(b"secret-two-secret-two-secret-two");
        let t = other
            .issue(TokenRole::Player, "demo", &user(), Duration::from_secs(60))
            .unwrap();
        assert!(matches!(tokens.verify(&t), Err(AuthError::Malformed(_))));
        assert!(matches!(
            tokens.verify("garbage"),
            Err(AuthError::Malformed(_))
        ));

        let claims = Claims {
            sub: "u1".into(),
            role: TokenRole::Player,
            table: "demo".into(),
            iat: 1,
            exp: 2,
        };
        let expired =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &tokens.encoding)
                .unwrap();
        assert_eq!(tokens.verify(&expired).unwrap_err(), AuthError::Expired);
        assert!(tokens.verify_any_age(&expired).is_ok());
        assert!(AuthError::Expired.is_unauthenticated());
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

    #[test]
    fn the_generated_secret_is_private_and_reused() {
        let dir = std::env::temp_dir().join(format!(
            "tablecast-auth-{}-{}",
            std::process::id(),
            now_secs()
        ));
        let a = persisted_secret(&dir).unwrap();
        let b = persisted_secret(&dir).unwrap();
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("auth.secret"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
