//! `[turn]`: TURN servers for players whose network blocks UDP, with credentials made per
//! session from a secret shared with the TURN server (the TURN REST API scheme: coturn's
//! `use-auth-secret` and `static-auth-secret`). What the node does with them is in
//! `crate::turn`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// `[turn]`. With no `urls`, the section is off and WHIP/WHEP replies carry no `Link` headers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// TURN server URLs, each handed to clients as one `Link: <url>; rel="ice-server"`:
    /// `turn:HOST:3478?transport=udp`, `turn:HOST:3478?transport=tcp`,
    /// `turns:HOST:443?transport=tcp`. Empty: no TURN.
    pub urls: Vec<String>,
    /// The secret shared with the TURN server (coturn's `static-auth-secret`). Never logged,
    /// never in any reply.
    pub secret: TurnSecret,
    /// How long the credentials handed to a client stay valid, in seconds.
    pub ttl_secs: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret: TurnSecret::default(),
            ttl_secs: 3600,
        }
    }
}

impl TurnConfig {
    /// Whether TURN is configured (there is at least one URL).
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }
}

/// The shared secret: a string that never shows in `Debug` output (and so in no log line that
/// prints the config).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TurnSecret(String);

impl TurnSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for signing credentials only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("(secret)")
        }
    }
}

impl Serialize for TurnSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TurnSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// Checks `[turn]`: `Err((key, message))` names the key and says what to write instead.
pub(super) fn validate(t: &TurnConfig) -> Result<(), (&'static str, String)> {
    if !t.enabled() {
        if !t.secret.is_empty() {
            return Err((
                "turn.secret",
                "is set but turn.urls is empty: list the TURN servers, such as \
                 urls = [\"turn:turn.example.com:3478?transport=udp\"], or remove the secret"
                    .into(),
            ));
        }
        return Ok(());
    }
    for url in &t.urls {
        check_url(url).map_err(|m| ("turn.urls", m))?;
    }
    if t.secret.expose().trim().is_empty() {
        return Err((
            "turn.secret",
            "must not be empty when turn.urls is set: use the TURN server's static-auth-secret \
             (make one with `openssl rand -hex 32`)"
                .into(),
        ));
    }
    if !(60..=86_400).contains(&t.ttl_secs) {
        return Err((
            "turn.ttl_secs",
            "must be from 60 to 86400 seconds; the default is 3600".into(),
        ));
    }
    Ok(())
}

/// One TURN URL (RFC 7065): `turn:` or `turns:`, a host, an optional port, an optional
/// `?transport=udp|tcp` (`turns:` is TLS, so TCP only). Nothing a `Link` header could not
/// carry.
fn check_url(url: &str) -> Result<(), String> {
    let shown: String = url.chars().take(120).collect();
    let form = "such as \"turn:turn.example.com:3478?transport=udp\", \
                \"turn:turn.example.com:3478?transport=tcp\" or \
                \"turns:turn.example.com:443?transport=tcp\"";
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(format!("{shown:?} is not a TURN URL: write one {form}"));
    };
    if !matches!(scheme, "turn" | "turns") {
        return Err(format!(
            "{shown:?} has the scheme {scheme:?}: use turn: or turns: (TLS), {form}"
        ));
    }
    if url
        .bytes()
        .any(|b| !b.is_ascii_graphic() || matches!(b, b'<' | b'>' | b'"' | b',' | b';' | b'\\'))
    {
        return Err(format!(
            "{shown:?} has spaces or characters a URL cannot hold: write one {form}"
        ));
    }
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    if authority.starts_with("//") {
        return Err(format!(
            "{shown:?}: a TURN URL has no \"//\" after the scheme; write one {form}"
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return Err(format!("{shown:?}: an IPv6 host needs its closing ]")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{shown:?} names no host: write one {form}"));
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!(
            "{shown:?} has the port {port:?}: use a number from 1 to 65535"
        ));
    }
    match query {
        None => Ok(()),
        Some("transport=tcp") => Ok(()),
        Some("transport=udp") if scheme == "turn" => Ok(()),
        Some("transport=udp") => Err(format!(
            "{shown:?}: turns: is TURN over TLS, which runs over TCP; use ?transport=tcp"
        )),
        Some(q) => Err(format!(
            "{shown:?} has the query {q:?}: the only one is ?transport=udp or ?transport=tcp"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_urls_of_every_usual_form_pass() {
        for url in [
            "turn:turn.example.com",
            "turn:turn.example.com:3478?transport=udp",
            "turn:198.18.0.1:3478?transport=tcp",
            "turns:turn.example.com:443?transport=tcp",
            "turn:[2001:db8::1]:3478?transport=udp",
        ] {
            assert_eq!(check_url(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn bad_turn_urls_say_what_to_write() {
        for (url, says) in [
            ("stun:stun.example.com:3478", "use turn: or turns:"),
            ("http://turn.example.com", "use turn: or turns:"),
            ("turn.example.com:3478", "use turn: or turns:"),
            ("turn://turn.example.com", "no \"//\""),
            ("turn::3478", "names no host"),
            ("turn:host:99999", "port"),
            ("turns:host:443?transport=udp", "use ?transport=tcp"),
            ("turn:host?transport=sctp", "the only one"),
            ("turn:host>; rel=\"x\"", "characters"),
        ] {
            let e = check_url(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn the_secret_never_shows_in_debug_output() {
        let c = TurnConfig {
            urls: vec!["turn:h".into()],
            secret: TurnSecret::new("hunter2-shared"),
            ttl_secs: 600,
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("(secret)"), "{shown}");
    }
}
