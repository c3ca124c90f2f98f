//! Which session a datagram on a shared media port belongs to.
//!
//! Every session on a worker shares one socket. STUN binding requests carry the session's ICE
//! username fragment (`USERNAME = server-ufrag:client-ufrag`), so they are routed by ufrag, and the
//! source address of each one the session's ICE agent accepts is remembered for it ([`Paths`]). Everything else (DTLS, SRTP,
//! SRTCP) is routed by source address. RFC 7983 says which is which from the first byte.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What a datagram is, by its first byte (RFC 7983 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stun,
    Dtls,
    Rtp,
    Unknown,
}

pub fn classify(datagram: &[u8]) -> Kind {
    match datagram.first() {
        Some(0..=3) => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        Some(128..=191) => Kind::Rtp,
        _ => Kind::Unknown,
    }
}

/// Whether a STUN datagram is a Binding request (RFC 8489 §5: method 0x001, class request).
pub fn is_binding_request(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[0] == 0x00 && datagram[1] == 0x01
}

/// Whether a STUN datagram is a Binding success response (method 0x001, class success).
pub fn is_binding_success(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[0] == 0x01 && datagram[1] == 0x01
}

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// The local (server) ufrag from a STUN message's USERNAME attribute, if it has one.
/// Never panics on malformed input.
pub fn stun_server_ufrag(datagram: &[u8]) -> Option<&str> {
    if datagram.len() < 20 || datagram[4..8] != MAGIC_COOKIE {
        return None;
    }
    let body_len = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
    let body = datagram.get(20..20 + body_len)?;
    let mut rest = body;
    while rest.len() >= 4 {
        let typ = u16::from_be_bytes([rest[0], rest[1]]);
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let value = rest.get(4..4 + len)?;
        if typ == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        let padded = (len + 3) & !3;
        rest = rest.get(4 + padded..)?;
    }
    None
}

/// The source addresses one session has sent authenticated binding requests from, with when each
/// last did.
///
/// An address is routable to its session from its first binding request that the session's ICE
/// agent accepted (right ufrag, right MESSAGE-INTEGRITY: the agent answered it with a success
/// response), so a stranger cannot claim a path. It stops being
/// routable when its consent has expired (no STUN for [`CONSENT_EXPIRY`], RFC 7675) while a
/// newer address is in use: the old path of a client that moved (an ICE restart from another
/// network). A session's only address is never expired here; the idle timeout closes the session.
#[derive(Debug, Default, Clone)]
pub struct Paths {
    seen: Vec<(SocketAddr, Instant)>,
}

/// RFC 7675 §5.1: consent expires 30 s after the last successful check.
pub const CONSENT_EXPIRY: Duration = Duration::from_secs(30);
/// At most this many addresses per session; the least recently used one makes room.
pub const MAX_PATHS: usize = 8;

/// What [`Paths::stun_from`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewPath {
    /// The address was known; its time was refreshed.
    Known,
    /// A new address, to be routed to the session; `evicted` is no longer.
    Added { evicted: Option<SocketAddr> },
}

impl Paths {
    /// Records an accepted binding request from `from`.
    pub fn stun_from(&mut self, from: SocketAddr, now: Instant) -> NewPath {
        if let Some((_, at)) = self.seen.iter_mut().find(|(a, _)| *a == from) {
            *at = now;
            return NewPath::Known;
        }
        let mut evicted = None;
        if self.seen.len() >= MAX_PATHS
            && let Some(oldest) = (0..self.seen.len()).min_by_key(|&i| self.seen[i].1)
        {
            evicted = Some(self.seen.swap_remove(oldest).0);
        }
        self.seen.push((from, now));
        NewPath::Added { evicted }
    }

    /// Removes and returns the addresses whose consent expired while a newer one is in use.
    pub fn expire(&mut self, now: Instant) -> Vec<SocketAddr> {
        let Some(newest) = self.seen.iter().map(|(_, at)| *at).max() else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        self.seen.retain(|&(addr, at)| {
            let stale = at < newest && now.saturating_duration_since(at) > CONSENT_EXPIRY;
            if stale {
                gone.push(addr);
            }
            !stale
        });
        gone
    }

    /// Every address, oldest first.
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.seen.iter().map(|(a, _)| *a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_path_expires_only_when_a_newer_one_is_in_use() {
        let t0 = Instant::now();
        let a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let b: SocketAddr = "198.51.100.2:6000".parse().unwrap();
        let mut p = Paths::default();
        assert_eq!(p.stun_from(a, t0), NewPath::Added { evicted: None });
        assert_eq!(p.stun_from(a, t0), NewPath::Known);
        let later = t0 + CONSENT_EXPIRY * 3;
        assert!(p.expire(later).is_empty(), "the only path stays");
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(p.stun_from(b, t1), NewPath::Added { evicted: None });
        assert!(
            p.expire(t1 + Duration::from_secs(5)).is_empty(),
            "a still has consent"
        );
        assert_eq!(p.expire(t0 + CONSENT_EXPIRY + Duration::from_secs(1)), [a]);
        assert_eq!(p.addrs().collect::<Vec<_>>(), [b]);
    }

    #[test]
    fn paths_are_bounded() {
        let t0 = Instant::now();
        let mut p = Paths::default();
        for i in 0..MAX_PATHS as u16 {
            p.stun_from(
                SocketAddr::from(([127, 0, 0, 1], 1000 + i)),
                t0 + Duration::from_millis(i.into()),
            );
        }
        let r = p.stun_from(
            SocketAddr::from(([127, 0, 0, 1], 9)),
            t0 + Duration::from_secs(1),
        );
        assert_eq!(
            r,
            NewPath::Added {
                evicted: Some(SocketAddr::from(([127, 0, 0, 1], 1000)))
            }
        );
        assert_eq!(p.addrs().count(), MAX_PATHS);
    }

    fn stun_with_username(username: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&[7u8; 12]);
        msg.extend_from_slice(&attr);
        msg
    }

    #[test]
    fn stun_is_routed_by_the_server_half_of_username() {
        let msg = stun_with_username("srvUfrag:cli1");
        assert_eq!(classify(&msg), Kind::Stun);
        assert_eq!(stun_server_ufrag(&msg), Some("srvUfrag"));
    }

    #[test]
    fn garbage_is_classified_without_panicking() {
        assert_eq!(classify(&[]), Kind::Unknown);
        assert_eq!(classify(&[0x16, 0xfe]), Kind::Dtls);
        assert_eq!(classify(&[0x80, 0x60]), Kind::Rtp);
        assert_eq!(stun_server_ufrag(&[0, 1, 0, 200]), None);
        let mut msg = stun_with_username("a:b");
        msg[3] = 0xff; // length beyond the datagram
        assert_eq!(stun_server_ufrag(&msg), None);
        for len in 0..40 {
            let _ = stun_server_ufrag(&vec![0u8; len]);
        }
    }
}
