//! A publisher's RTP packets through the node's own parsers and forwarding state, as
//! `Worker::on_publisher_rtp` and `Worker::fan_out_batch` take them, without the sockets:
//! keyframe detection (H.264 single NAL, STAP-A, FU-A; VP8), the keyframe's picture size (VP8
//! frame header, H.264 SPS), frame starts, simulcast layers and a player's selector switching
//! among them, the player's VP8 picture-id/TL0PICIDX rewriting, the per-layer NACK buffers, a
//! subscriber's SSRC/sequence/timestamp rewriting, and the RTX packet repairing a lost one.
//!
//! Input: one byte of flags (bit 0: VP8, else H.264; bit 1: simulcast with rids q, h and f on
//! SSRCs 1, 2 and 3; bit 2: the player shows the video 390 pixels wide; bit 3: it chose Low;
//! bit 4: its link estimate is 20 kbit/s per unit of each record's header; bit 5: its page is
//! hidden while a record's header is odd; bit 6: its estimate rises only on carried probes),
//! then records of `[header][length: u16][RTP packet]`
//! (see `common::records`), each parsed by `rtc` as it parses a decrypted SRTP packet. A header
//! advances time by that many 5 ms.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use rtc::shared::marshal::Unmarshal;
use std::time::{Duration, Instant};
use tablecast::media::keyframe::{self, VideoCodec};
use tablecast::media::router::PacketBuffer;
use tablecast::media::selector::{Limits, Selector, Verdict};
use tablecast::media::simulcast::{Layers, MAX_LAYERS};
use tablecast::media::subscriber::{OutStream, Rewrite};
use tablecast::media::{Quality, View, frame_size, rtx};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let codec = if flags & 1 == 1 {
        VideoCodec::Vp8
    } else {
        VideoCodec::H264
    };
    let mut layers = Layers::default();
    if flags & 2 != 0 {
        for (rid, ssrc) in [("q", 1), ("h", 2), ("f", 3)] {
            layers.open(Some(rid), ssrc);
        }
    }
    let mut selector = Selector::default();
    let mut epochs = 0u64;
    let mut buffers: Vec<PacketBuffer> = (0..MAX_LAYERS).map(|_| PacketBuffer::new(64)).collect();
    let mut out = OutStream::new(0xabcd, 90_000, true, 1000, 5000);
    let mut rtx_seq = 0u16;
    let mut now = Instant::now();

    for (header, bytes) in common::records(rest).take(256) {
        now += Duration::from_millis(u64::from(header) * 5);
        let Ok(mut packet) = rtc::rtp::Packet::unmarshal(&mut &bytes[..]) else {
            continue;
        };
        let ssrc = packet.header.ssrc;
        let layer = match layers.by_ssrc(ssrc) {
            Some(layer) => layer,
            None if !layers.is_simulcast() => layers.open(None, ssrc),
            None => continue,
        };
        if layer >= MAX_LAYERS {
            continue;
        }
        let Some(source) = layers.epoch(layer, || {
            epochs += 1;
            epochs
        }) else {
            continue;
        };
        let mut key = keyframe::is_keyframe(codec, &packet.payload);
        let size = key
            .then(|| frame_size::keyframe_size(codec, &packet.payload))
            .flatten();
        key &= layers.starts_frame(layer, packet.header.timestamp);
        layers.on_packet(layer, packet.payload.len(), size, now);
        buffers[layer].insert(source, Some(codec), &packet);
        let limits = Limits {
            budget: (flags & 16 != 0).then_some(u64::from(header) * 20_000),
            proven: flags & 64 != 0,
            view: View {
                width: if flags & 4 != 0 { 390 } else { 0 },
                height: if flags & 4 != 0 { 219 } else { 0 },
                hidden: flags & 32 != 0 && header % 2 == 1,
                quality: if flags & 8 != 0 { Quality::Low } else { Quality::Auto },
            },
        };
        let states = layers.states(now);
        let verdict = selector.on_packet(&states, layer, source, key, limits, now, || {
            epochs += 1;
            epochs
        });
        let _ = selector.poll_switch();
        let _ = selector.poll_keyframe_request();
        let Verdict::Forward { epoch } = verdict else {
            continue;
        };
        assert_eq!(selector.current(), Some(layer), "only the current layer goes out");
        if codec == VideoCodec::Vp8 {
            packet.payload = selector.vp8.rewrite(packet.payload, key);
        }
        let Rewrite::Send { seq, timestamp } = out.rewrite(
            epoch,
            packet.header.sequence_number,
            packet.header.timestamp,
            key,
            now,
        ) else {
            continue;
        };
        // NACKs, answered as `Worker::on_subscriber_rtcp` answers them: the packet just sent
        // (it must be found), and one the header picks among those before it.
        let repair = nack(&out, &selector, &buffers, codec, seq, rtx_seq)
            .expect("the packet just sent is buffered");
        assert_eq!(repair.header.timestamp, timestamp);
        if codec == VideoCodec::Vp8 {
            assert_eq!(
                repair.payload[2..],
                packet.payload[..],
                "a repair carries the player's numbering"
            );
        }
        rtx_seq = rtx_seq.wrapping_add(1);
        let _ = nack(
            &out,
            &selector,
            &buffers,
            codec,
            seq.wrapping_sub(u16::from(header)),
            rtx_seq,
        );
    }
});

/// The RTX packet answering a NACK of `lost` (the subscriber's sequence number), if it is still
/// buffered: the original, renumbered into the subscriber's stream, then wrapped for RTX.
fn nack(
    out: &OutStream,
    selector: &Selector,
    buffers: &[PacketBuffer],
    codec: VideoCodec,
    lost: u16,
    rtx_seq: u16,
) -> Option<rtc::rtp::Packet> {
    let (epoch, source_seq) = out.source_seq(lost)?;
    let (layer, source) = selector.source_of(epoch)?;
    let (_, original) = buffers.get(layer)?.get(source, source_seq)?;
    let (seq, timestamp) =
        out.rewrite_retransmission(epoch, source_seq, original.header.timestamp)?;
    let mut packet = original.clone();
    if codec == VideoCodec::Vp8 {
        packet.payload = selector.vp8.renumber(packet.payload);
    }
    packet.header.sequence_number = seq;
    packet.header.timestamp = timestamp;
    let repair = rtx::packet(&packet, 97, rtx_seq);
    assert_eq!(repair.payload.len(), packet.payload.len() + 2);
    Some(repair)
}
