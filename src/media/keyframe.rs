//! Keyframe detection from RTP payloads, and keyframe-request throttling.
//!
//! The node never decodes media; it only needs to know where a decodable picture starts, so that
//! a new subscriber's video begins on a keyframe, and how often to pass keyframe requests on to a
//! publisher (each one costs the dealer's encoder a large frame).

use std::time::{Duration, Instant};

/// The video codecs the node forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    H264,
    Vp8,
}

impl VideoCodec {
    /// From an SDP/rtc mime type such as `video/H264`.
    pub fn from_mime(mime: &str) -> Option<Self> {
        if mime.eq_ignore_ascii_case("video/h264") {
            Some(Self::H264)
        } else if mime.eq_ignore_ascii_case("video/vp8") {
            Some(Self::Vp8)
        } else {
            None
        }
    }
}

/// Whether this RTP payload starts (or is part of the start of) a keyframe.
///
/// - H.264 (RFC 6184): an IDR slice (type 5) or SPS (7), alone, inside a STAP-A (24), or as the
///   first fragment of an FU-A (28).
/// - VP8 (RFC 7741): the first packet of a partition (S=1, PID=0) whose payload header has P=0.
pub fn is_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::H264 => h264_is_keyframe(payload),
        VideoCodec::Vp8 => vp8_is_keyframe(payload),
    }
}

fn h264_is_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        5 | 7 => true,
        24 => {
            // STAP-A: 1-byte header, then (2-byte size, NAL unit)*.
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                let Some(nal) = rest.get(2..2 + size) else {
                    return false;
                };
                if matches!(nal.first().map(|b| b & 0x1f), Some(5 | 7)) {
                    return true;
                }
                rest = &rest[2 + size..];
            }
            false
        }
        28 => {
            // FU-A: indicator, then header with S bit and the original NAL type.
            payload
                .get(1)
                .is_some_and(|h| h & 0x80 != 0 && matches!(h & 0x1f, 5 | 7))
        }
        _ => false,
    }
}

fn vp8_is_keyframe(payload: &[u8]) -> bool {
    let Some(&desc) = payload.first() else {
        return false;
    };
    let start_of_partition = desc & 0x10 != 0;
    let pid = desc & 0x07;
    if !start_of_partition || pid != 0 {
        return false;
    }
    let mut i = 1;
    if desc & 0x80 != 0 {
        // Extended control bits: I (picture id), L (tl0picidx), T/K (tid/keyidx).
        let Some(&x) = payload.get(i) else {
            return false;
        };
        i += 1;
        if x & 0x80 != 0 {
            let Some(&pic) = payload.get(i) else {
                return false;
            };
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    // VP8 payload header: bit 0 of the first byte is P (inverse key frame flag).
    payload.get(i).is_some_and(|b| b & 0x01 == 0)
}

/// Lets at most one keyframe request through per interval.
#[derive(Debug, Clone)]
pub struct PliThrottle {
    interval: Duration,
    last: Option<Instant>,
}

impl PliThrottle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
        }
    }

    /// True when a request at `now` should be passed on (and records it).
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_keyframes_are_found_in_single_stap_a_and_fu_a_packets() {
        assert!(is_keyframe(VideoCodec::H264, &[0x65, 0x88]));
        assert!(is_keyframe(VideoCodec::H264, &[0x67, 0x42]));
        assert!(!is_keyframe(VideoCodec::H264, &[0x41, 0x9a]));
        // STAP-A with SPS, PPS.
        assert!(is_keyframe(
            VideoCodec::H264,
            &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce]
        ));
        assert!(!is_keyframe(VideoCodec::H264, &[0x78, 0, 2, 0x68, 0xce]));
        // FU-A start of an IDR slice, and a middle fragment of one.
        assert!(is_keyframe(VideoCodec::H264, &[0x7c, 0x85, 1, 2]));
        assert!(!is_keyframe(VideoCodec::H264, &[0x7c, 0x05, 1, 2]));
        // Garbage never panics.
        assert!(!is_keyframe(VideoCodec::H264, &[]));
        assert!(!is_keyframe(VideoCodec::H264, &[0x78, 0, 200, 0x67]));
    }

    #[test]
    fn vp8_keyframes_need_partition_start_and_p_bit_clear() {
        assert!(is_keyframe(VideoCodec::Vp8, &[0x10, 0x90]));
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x10, 0x91]));
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x00, 0x90]));
        // X=1, I=1 with a 15-bit picture id, then the payload header.
        assert!(is_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x90]
        ));
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x90, 0x80, 0x81]));
    }

    #[test]
    fn throttle_passes_one_request_per_interval() {
        let t0 = Instant::now();
        let mut t = PliThrottle::new(Duration::from_millis(500));
        let passed = (0..100)
            .filter(|i| t.allow(t0 + Duration::from_millis(i * 10)))
            .count();
        assert_eq!(passed, 2, "1 s of requests every 10 ms passes exactly 2");
    }
}
