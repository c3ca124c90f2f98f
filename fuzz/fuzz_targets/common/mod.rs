//! What the fuzz targets share: the sessions they patch and feed datagrams to, built by the
//! same `peer::answer` a media worker answers a WHIP/WHEP offer with.

#![allow(dead_code)] // each target uses its own part

use rtc::peer_connection::RTCPeerConnection;
use std::net::SocketAddr;
use std::time::Instant;
use tablecast::media::{Role, peer, restart};

/// Our candidate, as a worker on loopback announces it.
pub const LOCAL: &str = "127.0.0.1:10000";

/// An offer as a WHIP (`sendonly`) or WHEP (`recvonly`) client sends it: one VP8 video section
/// (the same as the integration tests' `common::offer`).
pub fn offer(role: Role) -> String {
    let direction = match role {
        Role::Publisher => "sendonly",
        Role::Subscriber => "recvonly",
    };
    [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "c=IN IP4 0.0.0.0",
        "a=mid:0",
        CLIENT_UFRAG_LINE,
        CLIENT_PWD_LINE,
        "a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF",
        "a=setup:actpass",
        &format!("a={direction}"),
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "",
    ]
    .join("\r\n")
}

/// The client's ICE credentials in [`offer`].
pub const CLIENT_UFRAG: &str = "abcd";
pub const CLIENT_PWD: &str = "abcdefghijklmnopqrstuvwx";
const CLIENT_UFRAG_LINE: &str = "a=ice-ufrag:abcd";
const CLIENT_PWD_LINE: &str = "a=ice-pwd:abcdefghijklmnopqrstuvwx";

/// An answered session and what a client learns from the answer.
pub struct Session {
    pub pc: RTCPeerConnection,
    pub local: SocketAddr,
    /// Our ICE credentials, from the answer.
    pub ufrag: String,
    pub pwd: String,
}

/// A session of `role`, answered at `now` exactly as `Worker::open` answers it.
pub fn session(role: Role, now: Instant) -> Session {
    let local: SocketAddr = LOCAL.parse().expect("a socket address");
    let answered = peer::answer(role, false, &offer(role), &[local], 16 * 1024, now)
        .expect("the node answers its own test offer");
    let ufrag = restart::attribute(&answered.sdp, "ice-ufrag")
        .expect("an answer has a=ice-ufrag")
        .to_owned();
    let pwd = restart::attribute(&answered.sdp, "ice-pwd")
        .expect("an answer has a=ice-pwd")
        .to_owned();
    Session {
        pc: answered.pc,
        local,
        ufrag,
        pwd,
    }
}

/// Splits fuzz input into records of `[header][length: u16, big-endian][bytes]`; a length of
/// 0, or one past the end, takes what is left.
pub fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&header, rest) = data.split_first()?;
        let (len, rest) = match rest {
            [hi, lo, rest @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), rest),
            _ => (0, rest),
        };
        let (record, rest) = if len == 0 || len > rest.len() {
            (rest, &[][..])
        } else {
            rest.split_at(len)
        };
        data = rest;
        Some((header, record))
    })
}
