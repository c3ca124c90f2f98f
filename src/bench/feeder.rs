//! The synthetic dealer for Janus: the same packets the WHIP publisher sends
//! ([`super::node::dealer_shape`], [`crate::client::synth`]), as plain RTP to the streaming
//! mountpoint's ports, with a sender report a second to the video RTCP port (which is also how
//! Janus learns where to send the keyframe requests it relays from its viewers).

use super::BenchError;
use super::janus::{AUDIO_PT, Janus, VIDEO_PT};
use super::node::dealer_shape;
use crate::client::synth;
use crate::media::keyframe::VideoCodec;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

pub struct Feeder {
    stop: Arc<AtomicBool>,
    pub video_sent: Arc<AtomicU64>,
    pub audio_sent: Arc<AtomicU64>,
    pub plis: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Feeder {
    pub fn start(janus: &Janus, epoch: Instant) -> Result<Feeder, BenchError> {
        let socket =
            UdpSocket::bind("127.0.0.1:0").map_err(|e| BenchError::io("bind the feeder", e))?;
        let to = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (video_to, audio_to, rtcp_to) = (
            to(janus.video_port),
            to(janus.audio_port),
            to(janus.video_rtcp_port),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let counters = [
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        ];
        let feeder = Feeder {
            stop: stop.clone(),
            video_sent: counters[0].clone(),
            audio_sent: counters[1].clone(),
            plis: counters[2].clone(),
            handle: None,
        };
        let handle = std::thread::Builder::new()
            .name("bench-feeder".into())
            .spawn(move || {
                feed(
                    socket,
                    [video_to, audio_to, rtcp_to],
                    epoch,
                    &stop,
                    &counters,
                );
            })
            .map_err(|e| BenchError::io("start the feeder", e))?;
        Ok(Feeder {
            handle: Some(handle),
            ..feeder
        })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Stream {
    ssrc: u32,
    seq: u16,
    pt: u8,
}

fn rtp(s: &mut Stream, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push(if marker { 0x80 } else { 0 } | s.pt);
    p.extend_from_slice(&s.seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&s.ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    s.seq = s.seq.wrapping_add(1);
    p
}

/// An RTCP sender report with no report blocks.
fn sender_report(ssrc: u32, rtp_ts: u32, packets: u32, octets: u32) -> Vec<u8> {
    let ntp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| {
            ((d.as_secs() + 2_208_988_800) << 32)
                | (((d.subsec_nanos() as u64) << 32) / 1_000_000_000)
        })
        .unwrap_or(0);
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&ntp.to_be_bytes());
    p.extend_from_slice(&rtp_ts.to_be_bytes());
    p.extend_from_slice(&packets.to_be_bytes());
    p.extend_from_slice(&octets.to_be_bytes());
    p
}

/// Is this RTCP compound packet carrying a PLI or a FIR?
fn wants_keyframe(mut data: &[u8]) -> bool {
    while data.len() >= 4 {
        let (fmt, pt) = (data[0] & 0x1f, data[1]);
        // PSFB: PLI is FMT 1, FIR is FMT 4.
        if pt == 206 && (fmt == 1 || fmt == 4) {
            return true;
        }
        let len = (u16::from_be_bytes([data[2], data[3]]) as usize + 1) * 4;
        data = data.get(len..).unwrap_or(&[]);
    }
    false
}

fn feed(
    socket: UdpSocket,
    [video_to, audio_to, rtcp_to]: [SocketAddr; 3],
    epoch: Instant,
    stop: &AtomicBool,
    [video_sent, audio_sent, plis]: &[Arc<AtomicU64>; 3],
) {
    let shape = dealer_shape();
    let mut video = Stream {
        ssrc: rand::random(),
        seq: rand::random(),
        pt: VIDEO_PT,
    };
    let mut audio = Stream {
        ssrc: rand::random(),
        seq: rand::random(),
        pt: AUDIO_PT,
    };
    let frame_every = Duration::from_micros(1_000_000 / u64::from(synth::VIDEO_FPS));
    let start = Instant::now();
    let (mut frame, mut audio_n, mut reports) = (0u64, 0u64, 0u64);
    let mut counter = 0u64;
    let mut last_key: Option<Instant> = None;
    let mut key_wanted = true;
    let (mut packets, mut octets) = (0u32, 0u32);
    let mut buf = [0u8; 1500];
    while !stop.load(Relaxed) {
        let next_video = start + frame_every * frame as u32;
        let next_audio = start + synth::AUDIO_PTIME * audio_n as u32;
        let next_report = start + Duration::from_secs(reports);
        let next = next_video.min(next_audio).min(next_report);
        let now = Instant::now();
        if next > now {
            let _ = socket.set_read_timeout(Some(next - now));
            if let Ok((n, _)) = socket.recv_from(&mut buf)
                && wants_keyframe(&buf[..n])
            {
                plis.fetch_add(1, Relaxed);
                key_wanted = true;
            }
            continue;
        }
        let ts = (frame * u64::from(synth::VIDEO_CLOCK / synth::VIDEO_FPS)) as u32;
        if now >= next_report {
            let _ = socket.send_to(&sender_report(video.ssrc, ts, packets, octets), rtcp_to);
            reports += 1;
        }
        if now >= next_video {
            let keyframe = key_wanted
                || last_key.is_none_or(|t| now.duration_since(t) >= synth::KEYFRAME_INTERVAL);
            if keyframe {
                last_key = Some(now);
                key_wanted = false;
            }
            let count =
                shape.packets_per_frame + usize::from(keyframe) * shape.keyframe_extra_packets;
            let payloads = synth::video_frame(
                VideoCodec::H264,
                keyframe,
                count,
                shape.packet_size,
                synth::micros_since(epoch),
                &mut counter,
            );
            let last = payloads.len() - 1;
            for (i, payload) in payloads.iter().enumerate() {
                let p = rtp(&mut video, ts, i == last, payload);
                if socket.send_to(&p, video_to).is_ok() {
                    video_sent.fetch_add(1, Relaxed);
                    packets = packets.wrapping_add(1);
                    octets = octets.wrapping_add(payload.len() as u32);
                }
            }
            frame += 1;
        }
        if now >= next_audio {
            let payload = synth::audio_packet(synth::micros_since(epoch), &mut counter);
            let p = rtp(&mut audio, (audio_n * 960) as u32, false, &payload);
            if socket.send_to(&p, audio_to).is_ok() {
                audio_sent.fetch_add(1, Relaxed);
            }
            audio_n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_requests_are_found_in_compound_rtcp() {
        let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 1];
        let pli = [0x81u8, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        assert!(!wants_keyframe(&rr));
        assert!(wants_keyframe(&[&rr[..], &pli[..]].concat()));
        assert!(!wants_keyframe(&[0x80, 206]));
    }

    #[test]
    fn the_feeder_writes_plain_rtp_and_a_well_formed_sender_report() {
        let mut s = Stream {
            ssrc: 0x0102_0304,
            seq: 65535,
            pt: VIDEO_PT,
        };
        let p = rtp(&mut s, 3000, true, &[9, 9]);
        assert_eq!(&p[..4], &[0x80, 0x80 | VIDEO_PT, 0xff, 0xff]);
        assert_eq!(&p[8..12], &[1, 2, 3, 4]);
        assert_eq!(s.seq, 0);
        let sr = sender_report(1, 2, 3, 4);
        assert_eq!(sr.len(), 28, "length 6 = 7 words");
        assert_eq!(sr[1], 200);
    }
}
