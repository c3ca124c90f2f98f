//! Synthetic media shaped like a dealer camera: H.264 or VP8 video at 30 fps with a keyframe
//! every 2 s, and Opus at 50 packets/s. Payloads are not decodable pictures, but their headers are
//! real, so the node's keyframe detection sees what it would see from OBS.
//!
//! Each payload carries, after the codec header, the send time (µs since the client's epoch) and
//! a packet counter, so receivers in the same process can measure added latency.

use crate::media::keyframe::VideoCodec;
use bytes::{BufMut, Bytes, BytesMut};
use std::time::{Duration, Instant};

pub const VIDEO_CLOCK: u32 = 90_000;
pub const AUDIO_CLOCK: u32 = 48_000;
pub const VIDEO_FPS: u32 = 30;
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);
pub const AUDIO_PTIME: Duration = Duration::from_millis(20);

/// Makes the payloads of one video frame.
pub fn video_frame(
    codec: VideoCodec,
    keyframe: bool,
    packets: usize,
    size: usize,
    stamp_us: u64,
    counter: &mut u64,
) -> Vec<Bytes> {
    (0..packets.max(1))
        .map(|i| {
            let mut b = BytesMut::with_capacity(size);
            match codec {
                VideoCodec::H264 => {
                    if keyframe && i == 0 {
                        // STAP-A: SPS and PPS.
                        b.put_slice(&[
                            0x78, 0x00, 0x04, 0x67, 0x42, 0xe0, 0x1f, 0x00, 0x02, 0x68, 0xce,
                        ]);
                    } else {
                        // FU-A of an IDR (5) or non-IDR (1) slice; S on the first fragment, E on the last.
                        let nal = if keyframe { 5 } else { 1 };
                        let first = if keyframe { i == 1 } else { i == 0 };
                        let s = if first { 0x80 } else { 0 };
                        let e = if i + 1 == packets { 0x40 } else { 0 };
                        b.put_slice(&[0x7c, s | e | nal]);
                    }
                }
                VideoCodec::Vp8 => {
                    let s = if i == 0 { 0x10 } else { 0 };
                    b.put_u8(s);
                    // VP8 payload header: P=0 for a keyframe.
                    b.put_u8(if keyframe { 0x90 } else { 0x91 });
                }
            }
            b.put_u64(stamp_us);
            b.put_u64(*counter);
            *counter += 1;
            b.resize(size.max(b.len()), 0xa5);
            b.freeze()
        })
        .collect()
}

/// An Opus-shaped payload.
pub fn audio_packet(stamp_us: u64, counter: &mut u64) -> Bytes {
    let mut b = BytesMut::with_capacity(80);
    b.put_u8(0xfc); // TOC: CELT FB 20 ms, one frame
    b.put_u64(stamp_us);
    b.put_u64(*counter);
    *counter += 1;
    b.resize(80, 0x5a);
    b.freeze()
}

/// The send time stamped into a synthetic payload, by codec.
pub fn payload_stamp(kind_video: Option<VideoCodec>, payload: &[u8]) -> Option<u64> {
    let offset = match kind_video {
        Some(VideoCodec::H264) => {
            if payload.first() == Some(&0x78) {
                11
            } else {
                2
            }
        }
        Some(VideoCodec::Vp8) => 2,
        None => 1,
    };
    payload
        .get(offset..offset + 8)
        .map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
}

/// Microseconds since `epoch`.
pub fn micros_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::keyframe::is_keyframe;

    #[test]
    fn synthetic_frames_carry_real_keyframe_markers() {
        let mut n = 0;
        for codec in [VideoCodec::H264, VideoCodec::Vp8] {
            let key = video_frame(codec, true, 5, 1000, 42, &mut n);
            assert!(is_keyframe(codec, &key[0]), "{codec:?}");
            assert!(key.iter().all(|p| p.len() == 1000));
            let delta = video_frame(codec, false, 4, 1000, 42, &mut n);
            assert!(delta.iter().all(|p| !is_keyframe(codec, p)), "{codec:?}");
            assert_eq!(payload_stamp(Some(codec), &key[0]), Some(42));
            assert_eq!(payload_stamp(Some(codec), &delta[1]), Some(42));
        }
        assert_eq!(payload_stamp(None, &audio_packet(7, &mut n)), Some(7));
    }
}
