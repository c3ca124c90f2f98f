//! Which session a datagram on a shared media port belongs to.
//!
//! Every session on a worker shares one socket. STUN binding requests carry the session's ICE
//! username fragment (`USERNAME = server-ufrag:client-ufrag`), so they are routed by ufrag, and the
//! source address they came from is remembered for the session. Everything else (DTLS, SRTP,
//! SRTCP) is routed by source address. RFC 7983 says which is which from the first byte.

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

#[cfg(test)]
mod tests {
    use super::*;

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
