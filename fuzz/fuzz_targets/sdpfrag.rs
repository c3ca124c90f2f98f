//! WHIP/WHEP `PATCH` bodies (`application/trickle-ice-sdpfrag`) on an answered session, as a
//! media worker applies them (`Worker::patch`): with the session's ETag, trickled candidates
//! (`trickle::add_candidates`); with `If-Match: "*"`, an ICE restart (`RestartRequest::parse`,
//! then `restart::apply`), whose answer must itself parse as a restart sdpfrag.
//!
//! Input: one byte whose low bit picks the session's role, then records of
//! `[header][length: u16][sdpfrag]` (see `common::records`); a header's low bit picks a restart
//! (1) or a trickle (0). At most 4 bodies per session.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use tablecast::media::{Role, restart, trickle};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let role = if flags & 1 == 0 {
        Role::Publisher
    } else {
        Role::Subscriber
    };
    let mut now = Instant::now();
    let mut session = common::session(role, now);
    for (header, body) in common::records(rest).take(4) {
        let Ok(sdpfrag) = std::str::from_utf8(body) else {
            continue;
        };
        now += Duration::from_millis(u64::from(header >> 1) * 10);
        if header & 1 == 0 {
            let _ = trickle::add_candidates(&mut session.pc, sdpfrag);
            continue;
        }
        let Ok(request) = restart::RestartRequest::parse(sdpfrag) else {
            continue;
        };
        if let Ok(restarted) = restart::apply(&mut session.pc, &request, now) {
            let ours = restart::RestartRequest::parse(&restarted.sdpfrag)
                .expect("the node's restart answer is a valid restart sdpfrag");
            assert_eq!(ours.ufrag, restarted.ufrag);
        }
    }
});
