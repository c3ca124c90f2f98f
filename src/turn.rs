//! TURN credentials for clients, made per session from the secret `[turn]` shares with the
//! TURN server (the TURN REST API scheme, as coturn's `use-auth-secret`):
//!
//! - username: `<expiry, unix seconds>:<user>`;
//! - credential: `base64(HMAC-SHA1(secret, username))`.
//!
//! The TURN server recomputes the credential from the username and refuses it once the expiry
//! has passed, so the node and the TURN server share nothing at run time but the secret.
//! Clients get them as RFC 9725 §4.6 `Link` headers:
//!
//! ```text
//! Link: <turn:turn.example.com:3478?transport=udp>; rel="ice-server"; username="1767225600:alice"; credential="..."; credential-type="password"
//! ```

use crate::config::{TurnConfig, TurnSecret};
use crate::ids::UserId;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The TURN servers of `[turn]`, ready to hand out credentials.
#[derive(Debug, Clone)]
pub struct TurnServers {
    urls: Vec<String>,
    secret: TurnSecret,
    ttl: Duration,
}

/// One client's credentials, valid for every URL until `expires_unix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    pub username: String,
    pub credential: String,
    pub expires_unix: u64,
}

impl TurnServers {
    /// `None` when `[turn]` lists no URLs. The config was validated at load.
    pub fn from_config(config: &TurnConfig) -> Option<Self> {
        config.enabled().then(|| Self {
            urls: config.urls.clone(),
            secret: config.secret.clone(),
            ttl: Duration::from_secs(config.ttl_secs),
        })
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Credentials for `user`, valid from `now` for the configured lifetime.
    pub fn credentials(&self, user: &UserId, now: SystemTime) -> TurnCredentials {
        let now_unix = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let expires_unix = now_unix.saturating_add(self.ttl.as_secs());
        let username = format!("{expires_unix}:{}", user.as_str());
        TurnCredentials {
            credential: sign(&self.secret, &username),
            username,
            expires_unix,
        }
    }

    /// One RFC 9725 `Link` header value per URL, all with the same credentials for `user`.
    /// A user id holds only `[A-Za-z0-9._-]` and a credential only base64, so neither needs
    /// escaping inside the quoted strings.
    pub fn link_headers(&self, user: &UserId, now: SystemTime) -> Vec<String> {
        let c = self.credentials(user, now);
        self.urls
            .iter()
            .map(|url| {
                format!(
                    "<{url}>; rel=\"ice-server\"; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    c.username, c.credential
                )
            })
            .collect()
    }
}

/// `base64(HMAC-SHA1(secret, username))`, as the TURN server computes it.
pub fn sign(secret: &TurnSecret, username: &str) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(ttl_secs: u64) -> TurnServers {
        TurnServers::from_config(&TurnConfig {
            urls: vec![
                "turn:turn.example.com:3478?transport=udp".into(),
                "turns:turn.example.com:443?transport=tcp".into(),
            ],
            secret: TurnSecret::new("north"),
            ttl_secs,
        })
        .unwrap()
    }

    #[test]
    fn the_credential_is_the_hmac_sha1_of_the_username() {
        // RFC 2202 test case 2 gives the HMAC-SHA1 of "what do ya want for nothing?" under
        // "Jefe": effcdf6ae5eb2fa2d27416d5f184df9c259a7c79.
        let known = sign(&TurnSecret::new("Jefe"), "what do ya want for nothing?");
        let bytes = hex::decode("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79").unwrap();
        assert_eq!(
            known,
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
    }

    #[test]
    fn the_username_carries_the_expiry_and_the_user() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let user = UserId::parse("alice").unwrap();
        let c = servers(600).credentials(&user, now);
        assert_eq!(c.username, "1800000600:alice");
        assert_eq!(c.expires_unix, 1_800_000_600);
        assert_eq!(c.credential, sign(&TurnSecret::new("north"), &c.username));
    }

    #[test]
    fn every_url_gets_one_link_header_with_the_same_credentials() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let user = UserId::parse("bob").unwrap();
        let s = servers(3600);
        let links = s.link_headers(&user, now);
        let c = s.credentials(&user, now);
        assert_eq!(links.len(), 2);
        assert_eq!(
            links[1],
            format!(
                "<turns:turn.example.com:443?transport=tcp>; rel=\"ice-server\"; username=\"1800003600:bob\"; credential=\"{}\"; credential-type=\"password\"",
                c.credential
            )
        );
        assert!(links.iter().all(|l| !l.contains("north")));
    }

    #[test]
    fn no_urls_means_no_turn() {
        assert!(TurnServers::from_config(&TurnConfig::default()).is_none());
    }
}
