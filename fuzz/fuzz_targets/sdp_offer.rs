//! A WHIP or WHEP offer, answered as a media worker answers one (`Worker::open`): the peer
//! connection is built from the offer and answers it with our candidate, then our ufrag (by
//! which STUN is routed) and the simulcast rids are read back from the answer. Whatever the offer,
//! an answer the node sends must parse as SDP and carry a ufrag.
//!
//! Input: one byte whose low bit picks the role (0: WHIP publisher, 1: WHEP subscriber) and whose
//! next bit makes a subscriber a node's relay pull (one stream per video section), then
//! the offer. Offers that are not UTF-8 never get this far (the HTTP layer refuses them).

#![no_main]

use libfuzzer_sys::fuzz_target;
use rtc::peer_connection::sdp::RTCSessionDescription;
use std::time::Instant;
use tablecast::media::{Role, peer, restart, simulcast};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, offer)) = data.split_first() else {
        return;
    };
    let Ok(offer) = std::str::from_utf8(offer) else {
        return;
    };
    let role = if flags & 1 == 0 {
        Role::Publisher
    } else {
        Role::Subscriber
    };
    // A subscriber offer may be a node's relay pull, answered with one stream per video section.
    let relay = role == Role::Subscriber && flags & 2 != 0;
    let local = "127.0.0.1:10000".parse().expect("a socket address");
    if let Ok(answered) = peer::answer(role, relay, offer, &[local], 16 * 1024, Instant::now()) {
        restart::attribute(&answered.sdp, "ice-ufrag").expect("an answer has a=ice-ufrag");
        let _ = simulcast::received_rids(&answered.sdp);
        RTCSessionDescription::answer(answered.sdp).expect("the answer parses as SDP");
    }
});
