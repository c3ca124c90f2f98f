//! Which frame of a table's camera a moment is: what a result is stamped with.
//!
//! A `round.result` names the frame of the dealer's video it belongs to (`media_ts`), so that
//! every player can reveal it on that frame. The name is an RTP timestamp in the clock of the
//! camera's *reference layer*: the first video layer of the current publisher session (the only
//! one without simulcast). The worker that receives the dealer's video tells the camera's
//! [`FrameClock`] of each frame as it arrives and of each RTCP sender report (NTP ↔ RTP), and the
//! control plane asks it, when a result comes in:
//!
//! - [`FrameClock::latest`]: the newest frame the node has received, whichever layer it came on;
//! - [`FrameClock::captured_at`]: the frame captured at a wall-clock moment (a card scanner on
//!   NTP sends `captured_at`), through the sender reports.
//!
//! Simulcast layers have clocks of their own (each SSRC starts at a random timestamp), so a frame
//! of another layer is named in the reference layer's clock through the two layers' sender
//! reports, which map both to the one NTP clock of the dealer's capture, and then snapped to the
//! reference layer's own frame at that moment.
//!
//! Written by one worker per packet of the dealer's video (an uncontended lock), read by the
//! control plane once per result. Sans-IO: every instant is a parameter.

use crate::ids::{CameraId, TableId};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The RTP clock rate of video (H.264 and VP8 alike, RFC 6184 and RFC 7741).
pub const VIDEO_CLOCK_RATE: u32 = 90_000;
/// Frames of the reference layer remembered for snapping: about 8 s at 30 frames a second.
const FRAMES_KEPT: usize = 256;
/// A reference layer this long without a packet, when a new SSRC comes, has been replaced.
const RESTART_QUIET: Duration = Duration::from_secs(1);

/// NTP time (RFC 3550: seconds since 1900 in the upper 32 bits, the fraction in the lower) of a
/// Unix time in milliseconds.
pub fn ntp_from_unix_ms(ms: u64) -> u64 {
    rtc::shared::time::SystemInstant::unix2ntp(Duration::from_millis(ms))
}

/// A frame of a table's camera, as a result names it: the reference layer's RTP timestamp, and
/// the reference layer's SSRC, which names the clock the timestamp is in (a dealer who
/// reconnects starts a new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamedFrame {
    pub media_ts: u32,
    pub clock: u32,
}

/// Is RTP timestamp `a` after `b`, in the 32-bit wrapping sense?
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

#[derive(Debug)]
struct Layer {
    ssrc: u32,
    /// The newest frame's timestamp and when its first packet came.
    latest: Option<(u32, Instant)>,
    /// The newest sender report: its NTP time and RTP timestamp.
    report: Option<(u64, u32)>,
}

#[derive(Debug, Default)]
struct State {
    /// In the order they opened; the first is the reference.
    layers: Vec<Layer>,
    /// On an edge node, the camera's streams from the origin's relay, by SSRC: the origin's
    /// `video.map` of each (its frame `rtp` is the camera's frame). An edge has no layers.
    relayed: HashMap<u32, (u32, NamedFrame)>,
    /// The reference layer's recent frames, oldest first.
    frames: VecDeque<u32>,
}

/// One camera's frames in time (see the module doc).
#[derive(Debug)]
pub struct FrameClock {
    clock_rate: u32,
    state: Mutex<State>,
}

impl FrameClock {
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A video packet of layer `ssrc` with RTP timestamp `ts` arrived.
    pub fn on_packet(&self, ssrc: u32, ts: u32, now: Instant) {
        let mut s = self.state();
        let i = match s.layers.iter().position(|l| l.ssrc == ssrc) {
            Some(i) => i,
            None => {
                // A new SSRC while the reference layer has gone quiet: the source restarted its
                // stream (a dealer's encoder, without simulcast), and its clock with it.
                if s.layers
                    .first()
                    .and_then(|l| l.latest)
                    .is_some_and(|(_, at)| now.saturating_duration_since(at) >= RESTART_QUIET)
                {
                    *s = State::default();
                }
                s.layers.push(Layer {
                    ssrc,
                    latest: None,
                    report: None,
                });
                s.layers.len() - 1
            }
        };
        let layer = &mut s.layers[i];
        if layer.latest.is_some_and(|(t, _)| !after(ts, t)) {
            // The same frame, or a late packet of an older one.
            return;
        }
        layer.latest = Some((ts, now));
        if i == 0 {
            if s.frames.len() == FRAMES_KEPT {
                s.frames.pop_front();
            }
            s.frames.push_back(ts);
        }
    }

    /// A sender report of layer `ssrc`: NTP time `ntp` is RTP timestamp `rtp`.
    pub fn on_sender_report(&self, ssrc: u32, ntp: u64, rtp: u32) {
        let mut s = self.state();
        if let Some(layer) = s.layers.iter_mut().find(|l| l.ssrc == ssrc) {
            layer.report = Some((ntp, rtp));
        }
    }

    /// The RTP timestamp of the reference layer at NTP time `ntp`, from its sender report or
    /// another layer's.
    fn reference_at(&self, s: &State, ntp: u64) -> Option<u32> {
        let reference = s.layers.first()?;
        let (r_ntp, r_rtp) = reference.report?;
        let ticks = ((ntp as i128 - r_ntp as i128) * self.clock_rate as i128) >> 32;
        Some(r_rtp.wrapping_add(ticks as i64 as u32))
    }

    /// The reference layer's frame nearest `ts` (within half a frame interval or so); `ts`
    /// itself when no remembered frame is that close.
    fn snap_nearest(s: &State, ts: u32) -> u32 {
        s.frames
            .iter()
            .copied()
            .min_by_key(|f| f.wrapping_sub(ts).min(ts.wrapping_sub(*f)))
            .filter(|f| f.wrapping_sub(ts).min(ts.wrapping_sub(*f)) <= 1_500)
            .unwrap_or(ts)
    }

    /// On an edge node: the origin says relay stream `ssrc`'s frame `rtp` is `frame`.
    pub fn set_relayed(&self, ssrc: u32, rtp: u32, frame: NamedFrame) {
        self.state().relayed.insert(ssrc, (rtp, frame));
    }

    /// On an edge node: a new pull from the origin; its streams are new.
    pub fn clear_relayed(&self) {
        self.state().relayed.clear();
    }

    /// Timestamp `ts` of `layer` in the reference layer's clock through both layers' sender
    /// reports (which map both to the dealer's NTP clock), snapped to the reference layer's
    /// frame there. None before both have reported.
    fn via_reports(&self, s: &State, layer: &Layer, ts: u32) -> Option<u32> {
        let (ntp, rtp) = layer.report?;
        let at_report = self.reference_at(s, ntp)?;
        Some(Self::snap_nearest(
            s,
            ts.wrapping_sub(rtp).wrapping_add(at_report),
        ))
    }

    /// Timestamp `ts` of layer `ssrc`, in the reference layer's clock, and whether it is exact
    /// (the reference layer itself, or through both layers' sender reports) rather than guessed
    /// from when the two layers' newest frames arrived. None when the layer is unknown, or
    /// nothing is known yet to relate it to the reference.
    pub fn to_reference(&self, ssrc: u32, ts: u32) -> Option<(NamedFrame, bool)> {
        let s = self.state();
        if let Some(&(rtp, frame)) = s.relayed.get(&ssrc) {
            let media_ts = frame.media_ts.wrapping_add(ts.wrapping_sub(rtp));
            return Some((
                NamedFrame {
                    media_ts,
                    clock: frame.clock,
                },
                true,
            ));
        }
        let reference = s.layers.first()?;
        let clock = reference.ssrc;
        let named = |media_ts| NamedFrame { media_ts, clock };
        if ssrc == clock {
            return Some((named(ts), true));
        }
        let layer = s.layers.iter().find(|l| l.ssrc == ssrc)?;
        if let Some(ts) = self.via_reports(&s, layer, ts) {
            return Some((named(ts), true));
        }
        // No reports: a layer's frame arrives within a few milliseconds of the same capture on
        // the reference layer, so the two newest frames, corrected for the time between their
        // arrivals, relate the clocks to within a frame.
        let ((l_ts, l_at), (r_ts, r_at)) = (layer.latest?, reference.latest?);
        let apart = if l_at >= r_at {
            (l_at - r_at).as_micros() as i64
        } else {
            -((r_at - l_at).as_micros() as i64)
        };
        let ticks = apart * i64::from(self.clock_rate) / 1_000_000;
        let guess = ts
            .wrapping_sub(l_ts)
            .wrapping_add(r_ts)
            .wrapping_add(ticks as i32 as u32);
        Some((named(Self::snap_nearest(&s, guess)), false))
    }

    /// The newest frame the node has received of the camera, in the reference layer's clock.
    pub fn latest(&self) -> Option<NamedFrame> {
        let s = self.state();
        let clock = s.layers.first()?.ssrc;
        let named = |media_ts| NamedFrame { media_ts, clock };
        let (i, (ts, _)) = s
            .layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.latest.map(|x| (i, x)))
            .max_by_key(|(_, (_, at))| *at)?;
        if i == 0 {
            return Some(named(ts));
        }
        // Another layer's frame: through its sender report to the dealer's clock, and from
        // there to the reference layer's. Without reports, the reference layer's own newest
        // frame (at most a frame or two older).
        self.via_reports(&s, &s.layers[i], ts)
            .or_else(|| s.layers[0].latest.map(|(t, _)| t))
            .map(named)
    }

    /// The frame captured at `unix_ms` (wall clock), in the reference layer's clock: the newest
    /// remembered frame at or before that moment when it is at most 50 ms before it, else the
    /// exact timestamp of that moment (outside the frames remembered, or in a gap of the
    /// reference layer's). None until a sender report has come.
    pub fn captured_at(&self, unix_ms: u64) -> Option<NamedFrame> {
        let s = self.state();
        let ts = self.reference_at(&s, ntp_from_unix_ms(unix_ms))?;
        let clock = s.layers.first()?.ssrc;
        let named = |media_ts| NamedFrame { media_ts, clock };
        let (Some(&oldest), Some(&newest)) = (s.frames.front(), s.frames.back()) else {
            return Some(named(ts));
        };
        if after(oldest, ts) || after(ts, newest.wrapping_add(self.clock_rate)) {
            return Some(named(ts));
        }
        // The reference layer's frame on screen at that moment: the newest at or before it,
        // when one is that close. A reference layer that skipped frames then (a starved encoder
        // drops its small layer's frames first) has none: the moment itself, which every
        // layer's frames fall after or before as they were captured.
        let frame = s
            .frames
            .iter()
            .rev()
            .copied()
            .find(|f| !after(*f, ts))
            .filter(|f| ts.wrapping_sub(*f) <= self.clock_rate / 20)
            .unwrap_or(ts);
        Some(named(frame))
    }
}

/// The cameras of this node's tables that have a dealer publishing here, by table and camera.
#[derive(Debug, Default)]
pub struct FrameClocks {
    cameras: Mutex<HashMap<(TableId, CameraId), Arc<FrameClock>>>,
}

impl FrameClocks {
    fn cameras(&self) -> std::sync::MutexGuard<'_, HashMap<(TableId, CameraId), Arc<FrameClock>>> {
        self.cameras.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A publisher session's video of the camera opened: its clock replaces any older one (a
    /// dealer who reconnected).
    pub fn publish(&self, table: &TableId, camera: &CameraId, clock: Arc<FrameClock>) {
        self.cameras()
            .insert((table.clone(), camera.clone()), clock);
    }

    /// The publisher session of `clock` ended; a newer session's clock stays.
    pub fn unpublish(&self, table: &TableId, camera: &CameraId, clock: &Arc<FrameClock>) {
        let mut cameras = self.cameras();
        let key = (table.clone(), camera.clone());
        if cameras.get(&key).is_some_and(|c| Arc::ptr_eq(c, clock)) {
            cameras.remove(&key);
        }
    }

    /// The clock of a table's camera on an edge node, which the origin's relay maps: the one
    /// there is, or a new one. The pull [`FrameClocks::unpublish`]es it when it ends.
    pub fn relayed(&self, table: &TableId, camera: &CameraId) -> Arc<FrameClock> {
        self.cameras()
            .entry((table.clone(), camera.clone()))
            .or_insert_with(|| Arc::new(FrameClock::new(VIDEO_CLOCK_RATE)))
            .clone()
    }

    /// The clock of the table's main camera, while a dealer publishes it on this node (or, on
    /// an edge, a pull maps it; it names no frame there).
    pub fn main(&self, table: &TableId) -> Option<Arc<FrameClock>> {
        self.camera(table, &CameraId::main())
    }

    /// The clock of a table's camera, while a dealer publishes it on this node or a pull from
    /// the origin maps it.
    pub fn camera(&self, table: &TableId, camera: &CameraId) -> Option<Arc<FrameClock>> {
        self.cameras()
            .get(&(table.clone(), camera.clone()))
            .cloned()
    }

    /// The frame of the table's main camera a result taken in now belongs to: the one captured
    /// at `captured_at` (wall-clock ms), else the newest one received. None when no dealer
    /// publishes the camera on this node, or (`captured_at`) before its first sender report.
    pub fn name_result(&self, table: &TableId, captured_at: Option<u64>) -> Option<NamedFrame> {
        let clock = self.main(table)?;
        let named = match captured_at {
            Some(ms) => clock.captured_at(ms),
            None => clock.latest(),
        };
        match named {
            Some(f) => {
                tracing::debug!(table_id = %table, media_ts = f.media_ts, media_clock = f.clock, ?captured_at, "result named its frame")
            }
            // The table's writer asks again when the node that took the result in could not name
            // it (it is often the same node): not worth a warning each time.
            None => {
                tracing::debug!(table_id = %table, ?captured_at, "a result's frame is unknown (captured_at before the dealer's first sender report): it goes out without media_ts, and players reveal it as it arrives")
            }
        }
        named
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: u32 = 3_000;

    /// A dealer at 30 frames a second on two layers whose clocks start apart, with sender
    /// reports on both: the top layer's newest frame is named in the reference layer's clock,
    /// and a wall-clock moment maps to the reference frame captured then.
    #[test]
    fn frames_are_named_in_the_reference_layers_clock() {
        let clock = FrameClock::new(90_000);
        let t0 = Instant::now();
        let (low, high) = (0x1111, 0x2222);
        let (low0, high0) = (4_000_000_000u32, 77u32);
        // Capture of frame n at unix 1_700_000_000_000 + n * 100/3 ms.
        let unix0 = 1_700_000_000_000u64;
        for n in 0..60u32 {
            let at = t0 + Duration::from_micros(u64::from(n) * 33_333);
            clock.on_packet(low, low0.wrapping_add(n * FRAME), at);
            // The top layer's frame arrives a little later.
            clock.on_packet(
                high,
                high0.wrapping_add(n * FRAME),
                at + Duration::from_millis(4),
            );
        }
        // No reports yet: the reference layer's own newest frame.
        assert_eq!(
            clock.latest().map(|f| f.media_ts),
            Some(low0.wrapping_add(59 * FRAME))
        );
        assert_eq!(clock.captured_at(unix0).map(|f| f.media_ts), None);
        // Reports of frame 30 on each layer, with the NTP time of its capture.
        let ntp30 = ntp_from_unix_ms(unix0 + 1_000);
        clock.on_sender_report(low, ntp30, low0.wrapping_add(30 * FRAME));
        clock.on_sender_report(high, ntp30, high0.wrapping_add(30 * FRAME));
        assert_eq!(
            clock.latest().map(|f| f.media_ts),
            Some(low0.wrapping_add(59 * FRAME))
        );
        // The top layer's frame 60 comes first: named as the reference layer's frame 60.
        let at60 = t0 + Duration::from_secs(2);
        clock.on_packet(high, high0.wrapping_add(60 * FRAME), at60);
        assert_eq!(
            clock.latest().map(|f| f.media_ts),
            Some(low0.wrapping_add(60 * FRAME))
        );
        // Wall clock to frame: frame 45 was captured at +1.5 s; 10 ms later is still frame 45.
        assert_eq!(
            clock.captured_at(unix0 + 1_510).map(|f| f.media_ts),
            Some(low0.wrapping_add(45 * FRAME))
        );
        assert_eq!(
            clock.captured_at(unix0 + 1_500).map(|f| f.media_ts),
            Some(low0.wrapping_add(45 * FRAME))
        );
        // In a gap of the reference layer (it skipped frames 46 to 50): the moment itself.
        let gap = FrameClock::new(90_000);
        for n in (0..60u32).filter(|n| !(46..=50).contains(n)) {
            gap.on_packet(low, low0.wrapping_add(n * FRAME), t0);
        }
        gap.on_sender_report(low, ntp30, low0.wrapping_add(30 * FRAME));
        // 10 ms into the missing frame 48: 900 ticks after it (to a tick: NTP's fractions).
        let moment = gap.captured_at(unix0 + 1_610).expect("named").media_ts;
        let off = moment.wrapping_sub(low0.wrapping_add(48 * FRAME)) as i32;
        assert!((899..=901).contains(&off), "{off} ticks after frame 48");
        assert_eq!(
            gap.captured_at(unix0 + 1_510).map(|f| f.media_ts),
            Some(low0.wrapping_add(45 * FRAME))
        );
        // Long before the remembered frames: the timestamp of that moment, unsnapped.
        assert_eq!(
            clock.captured_at(unix0 - 60_000).map(|f| f.media_ts),
            Some(low0.wrapping_add(30 * FRAME).wrapping_sub(61 * 90_000))
        );
    }

    /// A player's layer maps to the reference layer's clock: exactly through both layers'
    /// sender reports, and before them to within a frame from when the frames arrived.
    #[test]
    fn a_layers_timestamp_maps_to_the_reference_clock() {
        let clock = FrameClock::new(VIDEO_CLOCK_RATE);
        let t0 = Instant::now();
        let (low, high) = (0x1111u32, 0x2222u32);
        let (low0, high0) = (1_000u32, 4_294_000_000u32);
        for n in 0..30u32 {
            let at = t0 + Duration::from_micros(u64::from(n) * 33_333);
            clock.on_packet(low, low0 + n * FRAME, at);
            clock.on_packet(
                high,
                high0.wrapping_add(n * FRAME),
                at + Duration::from_millis(3),
            );
        }
        let expect = |n: u32| NamedFrame {
            media_ts: low0 + n * FRAME,
            clock: low,
        };
        assert_eq!(
            clock.to_reference(low, low0 + 7 * FRAME),
            Some((expect(7), true))
        );
        assert_eq!(clock.to_reference(0x3333, 5), None);
        // Guessed from arrivals: 3 ms apart is well inside a frame.
        assert_eq!(
            clock.to_reference(high, high0.wrapping_add(20 * FRAME)),
            Some((expect(20), false))
        );
        let ntp = ntp_from_unix_ms(1_700_000_000_000);
        clock.on_sender_report(low, ntp, low0 + 10 * FRAME);
        clock.on_sender_report(high, ntp, high0.wrapping_add(10 * FRAME));
        assert_eq!(
            clock.to_reference(high, high0.wrapping_add(25 * FRAME)),
            Some((expect(25), true))
        );
    }

    #[test]
    fn a_restarted_stream_becomes_the_reference() {
        let clock = FrameClock::new(VIDEO_CLOCK_RATE);
        let t0 = Instant::now();
        clock.on_packet(1, 1_000, t0);
        clock.on_packet(1, 4_000, t0 + Duration::from_millis(33));
        // A second layer while the first still flows: a simulcast layer, not a restart.
        clock.on_packet(2, 900_000, t0 + Duration::from_millis(40));
        assert_eq!(clock.latest().map(|f| f.media_ts), Some(4_000));
        // The encoder restarts with a new SSRC after 2 s of silence.
        clock.on_packet(3, 50, t0 + Duration::from_secs(2));
        assert_eq!(clock.latest().map(|f| f.media_ts), Some(50));
        assert_eq!(clock.latest().map(|f| f.clock), Some(3));
    }

    #[test]
    fn a_newer_publisher_keeps_its_clock_when_the_older_one_leaves() {
        let clocks = FrameClocks::default();
        let table = TableId::parse("demo").unwrap();
        let old = Arc::new(FrameClock::new(90_000));
        let new = Arc::new(FrameClock::new(90_000));
        clocks.publish(&table, &CameraId::main(), old.clone());
        clocks.publish(&table, &CameraId::main(), new.clone());
        clocks.unpublish(&table, &CameraId::main(), &old);
        assert!(clocks.main(&table).is_some_and(|c| Arc::ptr_eq(&c, &new)));
        clocks.unpublish(&table, &CameraId::main(), &new);
        assert!(clocks.main(&table).is_none());
    }
}
