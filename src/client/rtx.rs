//! Receiving RTX (RFC 4588) so that the NACK generator sees the repair.
//!
//! `rtc` de-encapsulates RTX in its endpoint handler, after the interceptors, and rtc-interceptor
//! 0.21.1's `NackGenerator` logs only packets on the media SSRC (`nack/generator.rs`,
//! `handle_read`). Left alone, a repaired packet is never marked received and is NACKed again and
//! again. [`RtxUnwrap`] sits wire-ward of the generator and turns an RTX packet back into the
//! packet it repairs: media SSRC, original sequence number (OSN) and payload type (`apt`).

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// The repair flow the answer announced (`a=ssrc-group:FID <media> <rtx>`, `a=fmtp:<rtx> apt=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtxFlow {
    pub media_ssrc: u32,
    pub rtx_ssrc: u32,
    /// (RTX payload type, the payload type it repairs).
    pub apt: Vec<(u8, u8)>,
}

impl RtxFlow {
    /// The first FID group of `sdp` and every RTX `apt`, if it has both.
    pub fn from_sdp(sdp: &str) -> Option<Self> {
        let (media_ssrc, rtx_ssrc) = sdp.lines().find_map(|l| {
            let mut f = l
                .trim()
                .strip_prefix("a=ssrc-group:FID ")?
                .split_whitespace();
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })?;
        let apt: Vec<(u8, u8)> = sdp
            .lines()
            .filter_map(|l| {
                let (pt, params) = l.trim().strip_prefix("a=fmtp:")?.split_once(' ')?;
                let apt = params
                    .split(';')
                    .find_map(|p| p.trim().strip_prefix("apt="))?;
                Some((pt.parse().ok()?, apt.trim().parse().ok()?))
            })
            .collect();
        (!apt.is_empty()).then_some(Self {
            media_ssrc,
            rtx_ssrc,
            apt,
        })
    }
}

/// Turns RTX packets back into the packets they repair (see the module doc).
pub struct RtxUnwrap {
    flow: Arc<OnceLock<RtxFlow>>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RtxUnwrap {
    /// `flow` is filled in once the answer is known.
    pub fn new(flow: Arc<OnceLock<RtxFlow>>) -> Self {
        Self {
            flow,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtxUnwrap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(p) = &mut msg.message.packet
            && let Some(flow) = self.flow.get()
            && p.header.ssrc == flow.rtx_ssrc
            && p.payload.len() >= 2
            && let Some(&(_, apt)) = flow
                .apt
                .iter()
                .find(|(rtx, _)| *rtx == p.header.payload_type)
        {
            p.header.ssrc = flow.media_ssrc;
            p.header.payload_type = apt;
            p.header.sequence_number = u16::from_be_bytes([p.payload[0], p.payload[1]]);
            p.payload = p.payload.slice(2..);
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

impl Interceptor for RtxUnwrap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flow_comes_from_the_fid_group_and_apt() {
        let sdp =
            "m=video 9 X 96 97\r\na=fmtp:97 apt=96\r\na=fmtp:96 x=1\r\na=ssrc-group:FID 11 22\r\n";
        assert_eq!(
            RtxFlow::from_sdp(sdp),
            Some(RtxFlow {
                media_ssrc: 11,
                rtx_ssrc: 22,
                apt: vec![(97, 96)]
            })
        );
        assert_eq!(RtxFlow::from_sdp("a=fmtp:97 apt=96\r\n"), None);
    }
}
