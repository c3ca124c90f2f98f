//! The node's key ring: which keys sign and verify tokens.
//!
//! - The **primary key** is `[auth] secret` (HS256), or a secret generated once into
//!   `<data.dir>/auth.secret` (mode 0600) when that is empty. Its id is `[auth] key_id`.
//! - **`[[auth.keys]]`** adds keys by id, as LiveKit's API key/secret pairs: an HS256 `secret`,
//!   or an ES256 `public_key` (a PEM file) that only verifies, so the node never holds the
//!   signing key of the operator's backend.
//! - A token names its key in the JWT `kid` header. A token without `kid` is checked against the
//!   primary key only. Rotating a key is: add the new one to every node, let the backend sign
//!   with it, then remove the old one once its tokens have expired.
//! - `[auth] issuer` and `[auth] audience`, when set, are checked on every token and put into
//!   every token the node issues.
//! - Every HS256 secret must be at least [`MIN_SECRET_BYTES`] long; a shorter one stops the
//!   node at start.
//!
//! [`Tokens::fingerprint`] hashes the verifying keys (never revealing them), so nodes of a
//! cluster can tell that they share the same keys.

use super::{ANY_TABLE, AuthError, Claims, Identity, TableScope, TokenRole};
use crate::config::{AuthConfig, KeyConfig};
use crate::ids::{TableId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The shortest HS256 secret the node accepts (RFC 7518 §3.2: at least the hash's size).
pub const MIN_SECRET_BYTES: usize = 32;

/// SHA-256 of a token's text: what a session remembers of the token that opened it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenDigest({}…)", hex::encode(&self.0[..4]))
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
    #[error(
        "{which} is {len} bytes; it must be at least {MIN_SECRET_BYTES}: generate one with `openssl rand -hex 32`"
    )]
    ShortSecret { which: String, len: usize },
    #[error(
        "[[auth.keys]] id {0:?} is used twice (or is [auth] key_id); give every key its own id"
    )]
    DuplicateKeyId(String),
    #[error("[[auth.keys]] {id:?}: {reason}")]
    BadKey { id: String, reason: String },
    #[error(
        "[auth] signing_key {0:?} names no HS256 key of this node; name [auth] key_id or an [[auth.keys]] id that has a secret"
    )]
    UnknownSigningKey(String),
    #[error("invalid token request: {0}")]
    BadRequest(String),
    #[error("cannot sign token: {0}")]
    Sign(String),
}

/// One verifying key, and its signing half when the node holds it.
struct Key {
    id: String,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    /// What the key material hashes to, for [`Tokens::fingerprint`].
    material: [u8; 32],
    validation: Validation,
    validation_any_age: Validation,
}

/// Issues and verifies tokens with the node's key ring.
pub struct Tokens {
    /// The primary key first.
    keys: Vec<Key>,
    /// Index into `keys` of the key that signs.
    signing: usize,
    issuer: Option<String>,
    audience: Option<String>,
}

/// What every key's validation shares.
#[derive(Clone, Copy)]
struct Checks<'a> {
    issuer: Option<&'a str>,
    audience: Option<&'a str>,
    leeway_secs: u64,
}

impl Tokens {
    /// A ring of one HS256 key, `secret`, with id `primary` and no `iss`/`aud` (tests, bench).
    pub fn from_secret(secret: &[u8]) -> Self {
        let key = hs256_key("primary", secret, DEFAULT_CHECKS);
        Self {
            keys: vec![key],
            signing: 0,
            issuer: None,
            audience: None,
        }
    }

    /// The node's key ring from `[auth]`, with the persisted secret under `data_dir` as the
    /// primary key when `[auth] secret` is empty.
    pub fn from_config(auth: &AuthConfig, data_dir: &Path) -> Result<Self, TokenSetupError> {
        let issuer = Some(auth.issuer.clone()).filter(|s| !s.is_empty());
        let audience = Some(auth.audience.clone()).filter(|s| !s.is_empty());
        let primary_id = if auth.key_id.is_empty() {
            "primary"
        } else {
            auth.key_id.as_str()
        };
        let primary = if auth.secret.is_empty() {
            persisted_secret(data_dir)?
        } else {
            auth.secret.clone()
        };
        check_secret_len("[auth] secret", &primary)?;
        let checks = Checks {
            issuer: issuer.as_deref(),
            audience: audience.as_deref(),
            leeway_secs: auth.leeway_secs,
        };
        let mut keys = vec![hs256_key(primary_id, primary.as_bytes(), checks)];
        for kc in &auth.keys {
            if keys.iter().any(|k| k.id == kc.id) {
                return Err(TokenSetupError::DuplicateKeyId(kc.id.clone()));
            }
            keys.push(configured_key(kc, checks)?);
        }
        let signing = if auth.signing_key.is_empty() {
            0
        } else {
            keys.iter()
                .position(|k| k.id == auth.signing_key && k.encoding.is_some())
                .ok_or_else(|| TokenSetupError::UnknownSigningKey(auth.signing_key.clone()))?
        };
        Ok(Self {
            keys,
            signing,
            issuer,
            audience,
        })
    }

    /// The ids of every key the node verifies with, the primary first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// A hash of every verifying key with its id, and of `iss`/`aud`: equal on two nodes exactly
    /// when they accept the same tokens. It reveals nothing of the keys.
    pub fn fingerprint(&self) -> String {
        let mut ids: Vec<&Key> = self.keys.iter().collect();
        ids.sort_by(|a, b| a.id.cmp(&b.id));
        let mut h = Sha256::new();
        h.update(b"tablecast-keys-v1");
        for k in ids {
            h.update((k.id.len() as u64).to_be_bytes());
            h.update(k.id.as_bytes());
            h.update(k.material);
        }
        for part in [&self.issuer, &self.audience] {
            let s = part.as_deref().unwrap_or("");
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }

    /// Signs a token for `user` as `role` on `table` (`*` for an operator on every table) with
    /// the signing key, naming it in `kid`.
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
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(serde_json::Value::String),
        };
        self.sign(&claims)
    }

    /// Signs `claims` as they are with the signing key.
    pub(crate) fn sign(&self, claims: &Claims) -> Result<String, TokenSetupError> {
        let key = &self.keys[self.signing];
        // The signing index only ever points at a key with an encoding half (from_config
        // checks it; from_secret's one key is HS256).
        let Some(encoding) = &key.encoding else {
            return Err(TokenSetupError::Sign("the signing key cannot sign".into()));
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.id.clone());
        jsonwebtoken::encode(&header, claims, encoding)
            .map_err(|e| TokenSetupError::Sign(e.to_string()))
    }

    /// Verifies a token's key, signature, expiry, `iss`/`aud` and claims.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_inner(token, false)
    }

    /// Verifies a token but lets it through after its expiry, marked `expired`: only for
    /// PATCH/DELETE of the session that token opened.
    pub fn verify_any_age(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_inner(token, true)
    }

    fn verify_inner(&self, token: &str, any_age: bool) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Malformed("not a JWT".into()))?;
        let key = match header.kid.as_deref() {
            None => &self.keys[0],
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.id == kid)
                .ok_or_else(|| AuthError::UnknownKey(kid.chars().take(64).collect()))?,
        };
        let validation = if any_age {
            &key.validation_any_age
        } else {
            &key.validation
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, validation)
            .map_err(|e| refusal(e.kind(), &key.id))?;
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
            token: TokenDigest::of(token),
            expired: claims.exp.saturating_add(key.validation.leeway) < now_secs(),
        })
    }
}

/// The refusal a decoding error becomes.
fn refusal(kind: &ErrorKind, key: &str) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidSignature => {
            AuthError::Malformed(format!("bad signature: not signed with key {key:?}"))
        }
        ErrorKind::MissingRequiredClaim(c) => AuthError::Malformed(format!("missing claim {c}")),
        ErrorKind::InvalidAlgorithm => {
            AuthError::Malformed(format!("wrong algorithm for key {key:?}"))
        }
        ErrorKind::InvalidIssuer => AuthError::Malformed("wrong issuer (iss)".into()),
        ErrorKind::InvalidAudience => AuthError::Malformed("wrong audience (aud)".into()),
        _ => AuthError::Malformed("not a tablecast JWT".into()),
    }
}

fn check_secret_len(which: &str, secret: &str) -> Result<(), TokenSetupError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(TokenSetupError::ShortSecret {
            which: which.to_owned(),
            len: secret.len(),
        });
    }
    Ok(())
}

const DEFAULT_CHECKS: Checks<'static> = Checks {
    issuer: None,
    audience: None,
    leeway_secs: 30,
};

fn validations(alg: Algorithm, checks: Checks<'_>) -> (Validation, Validation) {
    let mut v = Validation::new(alg);
    v.leeway = checks.leeway_secs;
    let mut required = vec!["exp", "sub"];
    if let Some(iss) = checks.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    match checks.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        // Without a configured audience, a token's `aud` is not the node's business.
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    let mut any_age = v.clone();
    any_age.validate_exp = false;
    (v, any_age)
}

fn hs256_key(id: &str, secret: &[u8], checks: Checks<'_>) -> Key {
    let (validation, validation_any_age) = validations(Algorithm::HS256, checks);
    let mut h = Sha256::new();
    h.update(b"HS256");
    h.update(secret);
    Key {
        id: id.to_owned(),
        decoding: DecodingKey::from_secret(secret),
        encoding: Some(EncodingKey::from_secret(secret)),
        material: h.finalize().into(),
        validation,
        validation_any_age,
    }
}

fn configured_key(kc: &KeyConfig, checks: Checks<'_>) -> Result<Key, TokenSetupError> {
    let bad = |reason: String| TokenSetupError::BadKey {
        id: kc.id.clone(),
        reason,
    };
    if kc.id.is_empty() || kc.id.len() > 64 || !kc.id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad(
            "id must be 1 to 64 printable ASCII characters without spaces".into(),
        ));
    }
    match (&kc.secret, &kc.public_key) {
        (secret, None) if !secret.is_empty() => {
            check_secret_len(&format!("[[auth.keys]] {:?} secret", kc.id), secret)?;
            Ok(hs256_key(&kc.id, secret.as_bytes(), checks))
        }
        (secret, Some(path)) if secret.is_empty() => {
            let pem = std::fs::read(path)
                .map_err(|e| bad(format!("cannot read public_key {}: {e}", path.display())))?;
            let decoding = DecodingKey::from_ec_pem(&pem).map_err(|e| {
                bad(format!(
                    "public_key {} is not a P-256 public key in PEM ({e}); export it with `openssl ec -pubout`",
                    path.display()
                ))
            })?;
            let (validation, validation_any_age) = validations(Algorithm::ES256, checks);
            let mut h = Sha256::new();
            h.update(b"ES256");
            h.update(&pem);
            Ok(Key {
                id: kc.id.clone(),
                decoding,
                encoding: None,
                material: h.finalize().into(),
                validation,
                validation_any_age,
            })
        }
        _ => Err(bad(
            "give exactly one of secret (HS256) or public_key (ES256 PEM file)".into(),
        )),
    }
}

pub(super) fn now_secs() -> u64 {
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
mod tests;
