//! Datagrams on a worker's shared media port, demultiplexed and fed to an answered session as a
//! media worker does it (`Worker::on_datagram`): RFC 7983 classification by the first byte,
//! STUN routed by the server ufrag of its USERNAME, everything else by source address, a path
//! learned only from a binding request the session's ICE agent answered with success; then
//! the session's `RTCPeerConnection` is driven (writes, reads, events, timers).
//!
//! So that DTLS, SRTP and SCTP are reached at all, the harness also plays a client's ICE agent
//! when asked: it sends authenticated binding requests (nominating with USE-CANDIDATE), and
//! answers the session's own connectivity checks with success. Then ICE connects and the DTLS
//! server takes ClientHellos from that path.
//!
//! Input: one byte whose low bit picks the session's role, then records of
//! `[header][length: u16][bytes]` (see `common::records`). A header's bits 0-1: 0 or 3, the
//! bytes are a datagram; 1, an authenticated binding request (with USE-CANDIDATE when the first
//! byte is odd; the rest are extra raw attributes); 2, a timer tick. Bit 2 picks one of two
//! client addresses; bits 3-7 advance time by that many 50 ms.

#![no_main]

mod common;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rtc::crypto::RTCCryptoProvider;
use rtc::ice::attributes::control::AttrControlling;
use rtc::ice::attributes::priority::PriorityAttr;
use rtc::ice::attributes::use_candidate::UseCandidateAttr;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::stun::attributes::{ATTR_USERNAME, AttrType, RawAttribute};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter, TransactionId};
use rtc::stun::textattrs::Username;
use rtc::stun::xoraddr::XorMappedAddress;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tablecast::media::Role;
use tablecast::media::demux::{self, Kind, NewPath};

fn crypto() -> &'static Arc<dyn RTCCryptoProvider> {
    static PROVIDER: OnceLock<Arc<dyn RTCCryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| rtc::crypto::default_provider().expect("a crypto provider"))
}

/// The session and the worker's view of it.
struct Port {
    s: common::Session,
    now: Instant,
    paths: demux::Paths,
    /// Addresses routed to the session (the worker's `by_addr`).
    routable: Vec<SocketAddr>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let role = if flags & 1 == 0 {
        Role::Publisher
    } else {
        Role::Subscriber
    };
    let now = Instant::now();
    let mut port = Port {
        s: common::session(role, now),
        now,
        paths: demux::Paths::default(),
        routable: Vec::new(),
    };
    let clients: [SocketAddr; 2] = [
        "127.0.0.1:40000".parse().expect("an address"),
        "192.0.2.7:50000".parse().expect("an address"),
    ];
    for (header, bytes) in common::records(rest).take(64) {
        port.now += Duration::from_millis(u64::from(header >> 3) * 50);
        let from = clients[usize::from(header >> 2 & 1)];
        match header & 3 {
            1 => {
                let request = binding_request(&port.s, bytes);
                port.datagram(from, &request);
            }
            2 => {
                let now = port.now;
                let _ = port.s.pc.handle_timeout(now);
                port.drive();
            }
            _ => port.datagram(from, bytes),
        }
    }
});

impl Port {
    /// One datagram from `from`, as `Worker::on_datagram` takes it.
    fn datagram(&mut self, from: SocketAddr, datagram: &[u8]) {
        let kind = demux::classify(datagram);
        let ours = match kind {
            Kind::Stun => {
                demux::stun_server_ufrag(datagram) == Some(self.s.ufrag.as_str())
                    || self.routable.contains(&from)
            }
            Kind::Dtls | Kind::Rtp => self.routable.contains(&from),
            Kind::Unknown => false,
        };
        if !ours {
            return;
        }
        self.read(from, datagram);
        if kind == Kind::Stun && demux::is_binding_request(datagram) {
            // Accepted when the agent answered it with success (see `Worker::on_datagram`).
            let accepted = self
                .drive()
                .iter()
                .any(|(to, out)| *to == from && demux::is_binding_success(out));
            if accepted && let NewPath::Added { evicted } = self.paths.stun_from(from, self.now) {
                self.routable.push(from);
                self.routable.retain(|a| Some(*a) != evicted);
            }
        }
        for gone in self.paths.expire(self.now) {
            self.routable.retain(|a| *a != gone);
        }
        self.drive();
    }

    fn read(&mut self, from: SocketAddr, datagram: &[u8]) {
        let msg = TaggedBytesMut {
            now: self.now,
            transport: TransportContext {
                local_addr: self.s.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(datagram),
        };
        let _ = self.s.pc.handle_read(msg);
    }

    /// Takes everything the connection has to give, as `Worker::drive` does, and returns what it
    /// sent. The client's ICE agent answers the session's connectivity checks.
    fn drive(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut sent = Vec::new();
        for _ in 0..4 {
            let mut checks = Vec::new();
            while let Some(out) = self.s.pc.poll_write() {
                if demux::is_binding_request(&out.message) {
                    checks.push((
                        out.transport.peer_addr,
                        binding_success(&out.message, out.transport.peer_addr),
                    ));
                }
                sent.push((out.transport.peer_addr, out.message.to_vec()));
            }
            while self.s.pc.poll_read().is_some() {}
            while self.s.pc.poll_event().is_some() {}
            if checks.is_empty() {
                break;
            }
            // A success response has no USERNAME: the worker routes it by address alone.
            for (to, response) in checks {
                if let Some(response) = response
                    && self.routable.contains(&to)
                {
                    self.read(to, &response);
                }
            }
        }
        sent
    }
}

/// A binding request the session's ICE agent accepts: our ufrag and the client's in USERNAME,
/// MESSAGE-INTEGRITY with our password. `extra` picks USE-CANDIDATE (first byte odd) and adds
/// the rest as raw attributes (`[type: u16][length: u8][value]` each).
fn binding_request(s: &common::Session, extra: &[u8]) -> Vec<u8> {
    let mut setters: Vec<Box<dyn Setter + '_>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId([7; 12])),
        Box::new(Username::new(
            ATTR_USERNAME,
            format!("{}:{}", s.ufrag, common::CLIENT_UFRAG),
        )),
        Box::new(AttrControlling(1)),
        Box::new(PriorityAttr(0x6e00_1eff)),
    ];
    if extra.first().is_some_and(|b| b & 1 == 1) {
        setters.push(Box::new(UseCandidateAttr::new()));
    }
    let mut rest = extra.get(1..).unwrap_or_default();
    while let [t0, t1, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        setters.push(Box::new(RawAttribute {
            typ: AttrType(u16::from_be_bytes([*t0, *t1])),
            length: len as u16,
            value: tail[..len].to_vec(),
        }));
        rest = &tail[len..];
    }
    setters.push(Box::new(
        MessageIntegrity::new_short_term_integrity_with_provider(s.pwd.clone(), crypto().crypto()),
    ));
    setters.push(Box::new(FINGERPRINT));
    let mut msg = Message::new();
    match msg.build(&setters) {
        Ok(()) => msg.raw,
        Err(_) => Vec::new(),
    }
}

/// The client's success response to the session's check `request` sent to `client`.
fn binding_success(request: &[u8], client: SocketAddr) -> Option<Vec<u8>> {
    let mut req = Message::new();
    req.unmarshal_binary(request).ok()?;
    let mut msg = Message::new();
    msg.build(&[
        Box::new(BINDING_SUCCESS),
        Box::new(req.transaction_id),
        Box::new(XorMappedAddress {
            ip: client.ip(),
            port: client.port(),
        }),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            common::CLIENT_PWD.to_owned(),
            crypto().crypto(),
        )),
        Box::new(FINGERPRINT),
    ])
    .ok()?;
    Some(msg.raw)
}
