//! Counting the RTCP sender reports a test player receives.
//!
//! `rtc` ends inbound RTCP at its interceptor chain: the application never sees a sender
//! report. [`SenderReportTap`] sits in the chain and counts them, by the SSRC they report on.

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Sender reports received, by SSRC.
pub type SenderReports = Arc<Mutex<HashMap<u32, u64>>>;

/// Counts inbound sender reports into a shared map.
pub struct SenderReportTap {
    counts: SenderReports,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl SenderReportTap {
    pub fn new(counts: SenderReports) -> Self {
        Self {
            counts,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SenderReportTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            for p in packets {
                if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                    *counts.entry(sr.ssrc).or_default() += 1;
                }
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for SenderReportTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
