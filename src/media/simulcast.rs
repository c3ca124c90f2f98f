//! Simulcast ingest: the layers a publisher sends of one camera, and which one is forwarded.
//!
//! The node does not transcode; it picks. A publisher that offered `a=simulcast:send` sends each
//! layer on its own SSRC, named by the `rtp-stream-id` header extension (RFC 8852/8853). A
//! publisher without simulcast is a set of one layer. Two parts, kept apart on purpose:
//!
//! - [`Layers`]: what the camera's layers are doing — per layer its rid and SSRC, when its
//!   current run of packets began and when its last packet came, its picture size (from its
//!   keyframes) and its byte rate. One per camera, on the publisher's worker.
//! - [`Selector`] (`selector.rs`): which layer one player gets, switched only at a keyframe of
//!   the layer switched to, with a fresh epoch of the player's own, so its rewriter
//!   (`subscriber.rs`) splices the layers into one continuous stream exactly as it splices a
//!   reconnecting dealer. One per player. It takes the highest layer that is flowing, that the
//!   player's view calls for (a 390-pixel-wide phone does not need 1280x720; a hidden page gets
//!   none; the player's quality choice) and that its link carries (`estimate.rs`), with headroom
//!   and hysteresis.
//!
//! Every layer travels to every worker with players of the camera, tagged with its index, its
//! own epoch and a snapshot of every layer's [`LayerState`]; each player's selector picks there.
//!
//! Both are sans-IO: time is an input, and nothing here allocates per packet.
//!
//! ```text
//!   idle --keyframe of the chosen layer--> forwarding(L)        [Start]
//!   forwarding(L) --chosen layer B != L--> pending(L→B)         keyframe requested of B
//!   pending(L→B) --keyframe of B--> forwarding(B)               [LayerStopped | Up | Link | View]
//!   any --page hidden--> idle (paused)
//!   pending(L→B) --no keyframe of B after KEYFRAME_RETRY--> pending(L→B), requested again
//! ```
//!
//! A layer is *flowing* while its last packet is under [`LAYER_IDLE`] old. One that stopped and
//! came back must flow for [`LAYER_STABLE`] before the selector switches up to it, so an encoder
//! that toggles a layer under a bandwidth limit does not make the players' picture flap.

use super::selector::UPSCALE_ALLOWED;
use std::time::{Duration, Instant};

/// A layer with no packet for this long has stopped (an encoder dropping it under a bandwidth
/// limit, a dealer turning it off). At 30 fps that is 12 frames. The players' picture stands
/// still for this long plus the time the next layer's keyframe takes (measured in Chromium on a
/// loaded 2-core machine: 550-1020 ms in all with 500 ms here).
pub const LAYER_IDLE: Duration = Duration::from_millis(400);
/// A layer that had stopped must flow this long again before it is switched up to.
pub const LAYER_STABLE: Duration = Duration::from_secs(1);
/// How often a keyframe of the layer being switched to is asked for, until it comes.
pub const KEYFRAME_RETRY: Duration = Duration::from_millis(300);

/// One layer of a camera.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The RTP stream id (`a=rid`), or None for a publisher without simulcast.
    pub rid: Option<String>,
    pub ssrc: u32,
    /// Start of the current run of packets (None before the first packet).
    run_start: Option<Instant>,
    /// Whether the current run follows a stop.
    resumed: bool,
    last: Option<Instant>,
    /// Picture size from the latest keyframe whose size could be read.
    pub size: Option<(u16, u16)>,
    window_start: Option<Instant>,
    window_bytes: u64,
    /// Bytes in each of the last complete one-second windows, newest first.
    rates: [u64; RATE_WINDOWS],
    /// RTP timestamp of the latest packet, which names the frame it belongs to.
    last_timestamp: Option<u32>,
    /// The source epoch of this layer's own stream, as relays to other nodes carry it (every
    /// layer, not only the forwarded one); given out on first use, new with each SSRC.
    epoch: Option<u64>,
}

impl Layer {
    fn new(rid: Option<String>, ssrc: u32) -> Self {
        Self {
            rid,
            ssrc,
            run_start: None,
            resumed: false,
            last: None,
            size: None,
            window_start: None,
            window_bytes: 0,
            rates: [0; RATE_WINDOWS],
            last_timestamp: None,
            epoch: None,
        }
    }

    /// The rid, or `-` for a layer without one (for logs).
    pub fn name(&self) -> &str {
        self.rid.as_deref().unwrap_or("-")
    }

    pub fn flowing(&self, now: Instant) -> bool {
        self.last
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_IDLE)
    }

    /// Flowing, and not a layer that has only just come back.
    fn eligible(&self, now: Instant) -> bool {
        self.flowing(now)
            && (!self.resumed
                || self
                    .run_start
                    .is_some_and(|t| now.saturating_duration_since(t) >= LAYER_STABLE))
    }
}

/// The layers of one camera.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    layers: Vec<Layer>,
}

impl Layers {
    /// A layer opened (rtc's track event). Returns its index; an already known rid keeps its
    /// index and takes the new SSRC, with its history forgotten when the SSRC changed.
    pub fn open(&mut self, rid: Option<&str>, ssrc: u32) -> usize {
        let found = self.layers.iter().position(|l| l.rid.as_deref() == rid);
        match found {
            Some(i) => {
                if self.layers[i].ssrc != ssrc {
                    self.layers[i] = Layer::new(rid.map(str::to_owned), ssrc);
                }
                i
            }
            None => {
                self.layers.push(Layer::new(rid.map(str::to_owned), ssrc));
                self.layers.len() - 1
            }
        }
    }

    /// The source epoch of layer `i`'s own stream (see [`Layer`]), taken from `alloc` the first
    /// time it is asked for.
    pub fn epoch(&mut self, i: usize, alloc: impl FnOnce() -> u64) -> Option<u64> {
        let l = self.layers.get_mut(i)?;
        Some(*l.epoch.get_or_insert_with(alloc))
    }

    /// The layer of an SSRC.
    pub fn by_ssrc(&self, ssrc: u32) -> Option<usize> {
        self.layers.iter().position(|l| l.ssrc == ssrc)
    }

    pub fn get(&self, i: usize) -> Option<&Layer> {
        self.layers.get(i)
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// True when the publisher sends simulcast (layers named by rid).
    pub fn is_simulcast(&self) -> bool {
        self.layers.iter().any(|l| l.rid.is_some())
    }

    /// A packet of layer `i` arrived: `size` when it starts a keyframe whose size was read.
    /// Whether a packet with RTP `timestamp` begins a new frame on layer `i` (the first packet,
    /// or one whose timestamp differs from the packet before it), and records it.
    ///
    /// A keyframe is only a place to start or switch at its first packet. An H.264 keyframe
    /// is often several packets that each look like one (SPS, PPS, then the IDR slices); a
    /// switch at a later one hands the player an IDR without the parameter sets of its new
    /// picture size, which it cannot decode, and it waits for the next keyframe (seconds, in
    /// Chromium).
    pub fn starts_frame(&mut self, i: usize, timestamp: u32) -> bool {
        let Some(l) = self.layers.get_mut(i) else {
            return false;
        };
        l.last_timestamp.replace(timestamp) != Some(timestamp)
    }

    pub fn on_packet(&mut self, i: usize, bytes: usize, size: Option<(u16, u16)>, now: Instant) {
        let Some(l) = self.layers.get_mut(i) else {
            return;
        };
        if !l.flowing(now) {
            l.resumed = l.last.is_some();
            l.run_start = Some(now);
        }
        l.last = Some(now);
        if size.is_some() {
            l.size = size;
        }
        match l.window_start {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => {
                l.window_bytes += bytes as u64;
            }
            Some(t) => {
                // A window that ended more than a second ago says nothing about the last second.
                let stale = now.saturating_duration_since(t) >= Duration::from_secs(2);
                if stale {
                    l.rates = [0; RATE_WINDOWS];
                } else {
                    l.rates.rotate_right(1);
                    l.rates[0] = l.window_bytes;
                }
                l.window_start = Some(now);
                l.window_bytes = bytes as u64;
            }
            None => {
                l.window_start = Some(now);
                l.window_bytes = bytes as u64;
            }
        }
    }
}

/// How many one-second windows a layer's rate is the most of ([`LayerState::bitrate`]).
pub const RATE_WINDOWS: usize = 3;

/// Layers of a camera that are forwarded at most: one per simulcast encoding. Browsers' and
/// OBS's simulcast send at most three.
pub const MAX_LAYERS: usize = 3;

/// What one layer of a camera is doing, as the players' selectors on every worker see it: taken
/// where the camera comes in, on each packet, and carried with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerState {
    /// Bits per second: the most of any of the last [`RATE_WINDOWS`] complete seconds. A
    /// second without a keyframe can carry a third of one with it; a player's layer is chosen
    /// against what the layer may send in any second, or it would go up onto a link that
    /// carries the layer only between keyframes, and freeze at the next.
    pub bitrate: u32,
    /// Picture size from its latest keyframe (0 when not known).
    pub width: u16,
    pub height: u16,
    pub flowing: bool,
    /// Flowing, and not a layer that has only just come back ([`LAYER_STABLE`]).
    pub eligible: bool,
}

impl LayerState {
    pub(super) fn rank(&self) -> (u32, u32) {
        (u32::from(self.width) * u32::from(self.height), self.bitrate)
    }

    /// Whether this layer's picture is large enough for a video shown at `width`x`height`
    /// device pixels (a little upscaling allowed). The video keeps its aspect ratio inside the
    /// element, so the smaller of the two scale factors is what it is drawn at.
    pub(super) fn covers(&self, width: u16, height: u16) -> bool {
        if self.width == 0 || self.height == 0 {
            return false;
        }
        let scale = (f64::from(width) / f64::from(self.width))
            .min(f64::from(height) / f64::from(self.height));
        scale <= UPSCALE_ALLOWED
    }
}

/// The layers of one camera, as [`Layers::states`] gives them.
pub type LayerStates = [LayerState; MAX_LAYERS];

impl Layers {
    /// What each layer (up to [`MAX_LAYERS`]) is doing now.
    pub fn states(&self, now: Instant) -> LayerStates {
        let mut out = LayerStates::default();
        for (o, l) in out.iter_mut().zip(&self.layers) {
            let (width, height) = l.size.unwrap_or((0, 0));
            *o = LayerState {
                bitrate: (l.rates.iter().max().copied().unwrap_or(0) * 8).min(u64::from(u32::MAX))
                    as u32,
                width,
                height,
                flowing: l.flowing(now),
                eligible: l.eligible(now),
            };
        }
        out
    }
}

/// The rids an answer takes in (`a=rid:<id> recv`, RFC 8851), for the session's log.
pub fn received_rids(answer_sdp: &str) -> Vec<&str> {
    answer_sdp
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=rid:"))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let id = parts.next()?;
            (parts.next() == Some("recv")).then_some(id)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::selector::*;
    use super::*;

    const Q: (u16, u16) = (320, 180);
    const H: (u16, u16) = (640, 360);
    const F: (u16, u16) = (1280, 720);

    #[test]
    fn a_layer_keeps_its_own_epoch_until_its_ssrc_changes() {
        let mut layers = Layers::default();
        let mut next = 10;
        let mut alloc = || {
            next += 1;
            next
        };
        let q = layers.open(Some("q"), 1);
        let f = layers.open(Some("f"), 2);
        let eq = layers.epoch(q, &mut alloc).unwrap();
        let ef = layers.epoch(f, &mut alloc).unwrap();
        assert_ne!(eq, ef);
        assert_eq!(
            layers.epoch(q, &mut alloc),
            Some(eq),
            "the same run keeps it"
        );
        layers.open(Some("q"), 1);
        assert_eq!(
            layers.epoch(q, &mut alloc),
            Some(eq),
            "the same SSRC again keeps it"
        );
        layers.open(Some("q"), 3);
        let again = layers.epoch(q, &mut alloc).unwrap();
        assert!(again > ef, "a new SSRC is a new, later source: {again}");
        assert_eq!(layers.epoch(7, &mut alloc), None);
    }

    #[test]
    fn only_the_first_packet_of_a_frame_starts_it() {
        use crate::media::keyframe::{VideoCodec, is_keyframe};
        let mut layers = Layers::default();
        let l = layers.open(Some("f"), 1);
        // An H.264 keyframe as Chromium sends it: SPS, PPS, then the IDR in FU-A fragments,
        // all with one timestamp; then a delta frame.
        let keyframe_au: [(&[u8], u32); 4] = [
            (&[0x67, 0x42, 0xc0, 0x1f], 9000),
            (&[0x68, 0xce, 0x3c, 0x80], 9000),
            (&[0x7c, 0x85, 0x88], 9000), // FU-A start of an IDR slice
            (&[0x7c, 0x45, 0x88], 9000), // its end
        ];
        let starts: Vec<bool> = keyframe_au
            .iter()
            .map(|(payload, ts)| {
                // As the fan-out does: every packet's timestamp is recorded.
                let starts = layers.starts_frame(l, *ts);
                is_keyframe(VideoCodec::H264, payload) && starts
            })
            .collect();
        // The IDR's first fragment looks like a keyframe too, but it is not where one starts.
        assert!(is_keyframe(VideoCodec::H264, keyframe_au[2].0));
        assert_eq!(starts, [true, false, false, false]);
        assert!(layers.starts_frame(l, 12000), "the next frame starts anew");
        assert!(!layers.starts_frame(l, 12000));
    }

    /// A camera sending q, h and f (listed lowest first, like Chromium's dealer page) at about
    /// 160 kbit/s, 560 kbit/s and 2.4 Mbit/s, driven in 10 ms steps, and one player's selector.
    struct Camera {
        layers: Layers,
        selector: Selector,
        limits: Limits,
        epochs: u64,
        now: Instant,
        /// Which layer each forwarded packet came from, with its epoch.
        forwarded: Vec<(usize, u64)>,
        switches: Vec<Switch>,
        /// Keyframe requests (layer bits).
        plis: Vec<u8>,
        /// Each layer's bytes per 10 ms.
        bytes: [usize; 3],
    }

    const BYTES_PER_10MS: [usize; 3] = [200, 700, 3000];

    impl Camera {
        fn new() -> Self {
            let mut layers = Layers::default();
            for (rid, ssrc) in [("q", 100), ("h", 200), ("f", 300)] {
                layers.open(Some(rid), ssrc);
            }
            Self {
                layers,
                selector: Selector::default(),
                limits: Limits::default(),
                epochs: 10,
                now: Instant::now(),
                forwarded: Vec::new(),
                switches: Vec::new(),
                plis: Vec::new(),
                bytes: BYTES_PER_10MS,
            }
        }

        fn packet(&mut self, layer: usize, keyframe: bool) {
            let size = keyframe.then_some([Q, H, F][layer]);
            self.layers
                .on_packet(layer, self.bytes[layer], size, self.now);
            let states = self.layers.states(self.now);
            let epochs = &mut self.epochs;
            let verdict = self.selector.on_packet(
                &states,
                layer,
                1000 + layer as u64,
                keyframe,
                self.limits,
                self.now,
                || {
                    *epochs += 1;
                    *epochs
                },
            );
            if let Verdict::Forward { epoch } = verdict {
                self.forwarded.push((layer, epoch));
            }
            self.switches.extend(self.selector.poll_switch());
            let bits = self.selector.poll_keyframe_request();
            if bits != 0 {
                self.plis.push(bits);
            }
        }

        /// `ms` of packets of the `active` layers, keyframes only where `keyframes` says.
        fn run(&mut self, ms: u64, active: &[usize], keyframes: &[usize]) {
            for step in 0..ms / 10 {
                for &l in active {
                    self.packet(l, step == 0 && keyframes.contains(&l));
                }
                self.now += Duration::from_millis(10);
            }
        }

        /// `ms` of all three layers, each with a keyframe every 500 ms.
        fn play(&mut self, ms: u64) {
            for step in 0..ms / 10 {
                for l in 0..3 {
                    self.packet(l, step % 50 == 0);
                }
                self.now += Duration::from_millis(10);
            }
        }

        fn reasons(&self) -> Vec<(Option<usize>, usize, SwitchReason)> {
            self.switches
                .iter()
                .map(|s| (s.from, s.to, s.reason))
                .collect()
        }
    }

    #[test]
    fn starts_on_the_first_keyframe_and_moves_to_the_top_layer_at_its_keyframe() {
        let mut cam = Camera::new();
        // q's keyframe comes first: better something than nothing.
        cam.run(10, &[0], &[0]);
        assert_eq!(cam.selector.current(), Some(0));
        // h and f start flowing with keyframes: up at once (new layers need no probation, and
        // a link that has shown no limit is not held back).
        cam.run(100, &[0, 1, 2], &[1]);
        cam.run(100, &[0, 1, 2], &[2]);
        assert_eq!(cam.selector.current(), Some(2));
        assert_eq!(
            cam.reasons(),
            [
                (None, 0, SwitchReason::Start),
                (Some(0), 1, SwitchReason::Up),
                (Some(1), 2, SwitchReason::Up),
            ]
        );
        // Only one layer is ever forwarded at a time, and each switch brings a new epoch.
        let last = *cam.forwarded.last().unwrap();
        assert_eq!(last.0, 2);
        assert!(cam.forwarded.iter().all(|&(l, e)| (l == 0) == (e == 11)));
    }

    #[test]
    fn a_stopped_top_layer_hands_over_to_the_next_at_its_keyframe_and_returns_after_probation() {
        let mut cam = Camera::new();
        cam.run(1000, &[0, 1, 2], &[0, 1, 2]);
        assert_eq!(cam.selector.current(), Some(2));
        cam.plis.clear();

        // f stops. Within LAYER_IDLE nothing changes; after it, a keyframe is asked of h only.
        cam.run(LAYER_IDLE.as_millis() as u64 - 10, &[0, 1], &[]);
        assert_eq!(cam.selector.pending(), None);
        cam.run(120, &[0, 1], &[]);
        assert_eq!(cam.selector.pending(), Some(1));
        assert_eq!(cam.plis, [0b010], "a keyframe is requested of h");
        // Until h's keyframe, h's packets are not forwarded (they cannot be decoded), and the
        // request is repeated while none comes.
        let before = cam.forwarded.len();
        cam.run(400, &[0, 1], &[]);
        assert_eq!(cam.forwarded.len(), before);
        assert_eq!(cam.plis, [0b010, 0b010]);
        cam.run(10, &[0, 1], &[1]);
        assert_eq!(cam.selector.current(), Some(1));
        let s = *cam.switches.last().unwrap();
        assert_eq!(
            (s.from, s.to, s.reason),
            (Some(2), 1, SwitchReason::LayerStopped)
        );

        // f comes back: it must flow for LAYER_STABLE before the switch up is even asked for.
        cam.plis.clear();
        cam.run(LAYER_STABLE.as_millis() as u64 - 120, &[0, 1, 2], &[2]);
        assert_eq!(cam.selector.current(), Some(1));
        assert!(cam.plis.is_empty(), "asked for f too early: {:?}", cam.plis);
        cam.run(130, &[0, 1, 2], &[]);
        assert_eq!(cam.plis, [0b100]);
        // h keeps going out until f's keyframe, then f does.
        cam.run(50, &[0, 1, 2], &[]);
        assert_eq!(cam.forwarded.last().unwrap().0, 1);
        cam.run(10, &[0, 1, 2], &[2]);
        assert_eq!(cam.selector.current(), Some(2));
        assert_eq!(
            cam.switches.last().map(|s| s.reason),
            Some(SwitchReason::Up)
        );
    }

    #[test]
    fn a_layer_rate_is_the_most_of_its_last_seconds_so_a_keyframe_second_counts() {
        let mut layers = Layers::default();
        let l = layers.open(Some("h"), 1);
        let t0 = Instant::now();
        // Seconds of 100 kB (one with a keyframe), then 50 kB, 50 kB, 50 kB, in 10 ms packets.
        for (second, bytes_per_second) in [100_000usize, 50_000, 50_000, 50_000, 50_000]
            .into_iter()
            .enumerate()
        {
            for step in 0..100u64 {
                let now = t0 + Duration::from_millis(second as u64 * 1000 + step * 10);
                layers.on_packet(l, bytes_per_second / 100, None, now);
            }
            let now = t0 + Duration::from_millis(second as u64 * 1000 + 1000);
            layers.on_packet(l, 0, None, now);
            let bitrate = layers.states(now)[l].bitrate;
            let expected = if second < RATE_WINDOWS {
                800_000
            } else {
                400_000
            };
            assert_eq!(bitrate, expected, "after second {second}");
        }
    }

    #[test]
    fn rank_is_by_picture_size_not_by_rid_order() {
        // rids listed highest first, as some publishers do (OBS-style 0/1/2 names, h;m;l).
        let mut layers = Layers::default();
        layers.open(Some("0"), 1);
        layers.open(Some("1"), 2);
        let now = Instant::now();
        layers.on_packet(0, 1000, Some(F), now);
        layers.on_packet(1, 1000, Some(Q), now);
        let states = layers.states(now);
        let mut sel = Selector::default();
        sel.on_packet(&states, 1, 1, true, Limits::default(), now, || 5);
        assert_eq!(sel.pending(), Some(0), "the 1280x720 layer is wanted");
        // A 390-pixel-wide phone wants the small one.
        let mut sel = Selector::default();
        let phone = Limits {
            budget: None,
            proven: false,
            view: crate::media::View {
                width: 300,
                height: 650,
                ..Default::default()
            },
        };
        sel.on_packet(&states, 0, 1, true, phone, now, || 5);
        assert_eq!(sel.pending(), Some(1));
    }

    #[test]
    fn a_publisher_without_simulcast_is_one_layer_that_starts_on_a_keyframe() {
        let mut layers = Layers::default();
        let l = layers.open(None, 42);
        assert!(!layers.is_simulcast());
        let mut sel = Selector::default();
        let now = Instant::now();
        let lim = Limits::default();
        layers.on_packet(l, 100, None, now);
        let st = layers.states(now);
        assert_eq!(
            sel.on_packet(&st, l, 9, false, lim, now, || 7),
            Verdict::Drop
        );
        assert_eq!(sel.poll_keyframe_request(), 1);
        assert_eq!(
            sel.on_packet(&st, l, 9, true, lim, now, || 7),
            Verdict::Forward { epoch: 7 }
        );
        // Once started, a pause longer than LAYER_IDLE does not stop or re-key the stream.
        let later = now + Duration::from_secs(3);
        layers.on_packet(l, 100, None, later);
        let st = layers.states(later);
        assert_eq!(
            sel.on_packet(&st, l, 9, false, lim, later, || 8),
            Verdict::Forward { epoch: 7 }
        );
        // A new source of the layer (a new SSRC) is a new epoch.
        assert_eq!(
            sel.on_packet(&st, l, 10, false, lim, later, || 8),
            Verdict::Forward { epoch: 8 }
        );
        assert_eq!(
            sel.poll_switch().map(|s| s.reason),
            Some(SwitchReason::Start)
        );
        assert_eq!(sel.poll_switch(), None);
    }

    #[test]
    fn the_link_estimate_picks_the_layer_steps_down_at_once_and_up_only_after_holding() {
        let mut cam = Camera::new();
        cam.play(2000);
        assert_eq!(cam.selector.current(), Some(2));
        let top_epoch = cam.forwarded.last().map(|&(_, e)| e).unwrap();
        assert_eq!(cam.selector.source_of(top_epoch), Some((2, 1002)));
        // The link carries 600 kbit/s: h (560 kbit/s) plus audio does not fit, q does.
        cam.limits.budget = Some(600_000);
        cam.play(600);
        assert_eq!(cam.selector.current(), Some(0));
        assert_eq!(
            cam.switches.last().map(|s| (s.to, s.reason)),
            Some((0, SwitchReason::Link))
        );
        // The 1280x720 run the link did not carry is not repaired: its losses would take the
        // link from the keyframe of the layer switched to.
        assert_eq!(cam.selector.source_of(top_epoch), None);
        let low_epoch = cam.forwarded.last().map(|&(_, e)| e).unwrap();
        assert_eq!(cam.selector.source_of(low_epoch), Some((0, 1000)));
        // Held below the layer it wants: a probe should find whether h fits, at h's rate with
        // headroom and audio.
        let h_rate = u64::from(cam.layers.states(cam.now)[1].bitrate);
        assert_eq!(
            cam.selector.probe_target(),
            Some((h_rate as f64 * UP_HEADROOM) as u64 + AUDIO_RESERVE_BPS)
        );
        // An estimate wobbling just over h's rate with headroom does not make it flap:
        // 560k × 1.25 + 64k = 764k must hold for UP_HOLD.
        let switches = cam.switches.len();
        for i in 0..20 {
            cam.limits.budget = Some(if i % 2 == 0 { 800_000 } else { 700_000 });
            cam.play(500);
        }
        assert_eq!(cam.switches.len(), switches, "{:?}", cam.reasons());
        // The estimate stays up: one layer up after UP_HOLD, then the next after another.
        cam.limits.budget = Some(5_000_000);
        cam.play(UP_HOLD.as_millis() as u64 + 600);
        assert_eq!(cam.selector.current(), Some(1));
        // A switch up keeps the run before repairable.
        assert_eq!(cam.selector.source_of(low_epoch), Some((0, 1000)));
        cam.play(UP_HOLD.as_millis() as u64 + 600);
        assert_eq!(cam.selector.current(), Some(2));
        // Nothing holds it back: nothing to probe for.
        assert_eq!(cam.selector.probe_target(), None);
        // Nothing fits at all: the lowest layer, not none.
        cam.limits.budget = Some(10_000);
        cam.play(600);
        assert_eq!(cam.selector.current(), Some(0));
        // The limit is lifted (no evidence of one any more): still one step at a time.
        cam.limits.budget = None;
        cam.play(1000);
        assert_eq!(cam.selector.current(), Some(0));
        cam.play(UP_HOLD.as_millis() as u64);
        assert_eq!(cam.selector.current(), Some(1));
    }

    #[test]
    fn a_budget_a_probe_proved_goes_up_after_the_short_hold() {
        let mut cam = Camera::new();
        cam.play(2000);
        cam.limits.budget = Some(600_000);
        cam.limits.proven = true;
        cam.play(600);
        assert_eq!(cam.selector.current(), Some(0));
        // A carried probe raised the estimate past h's rate with headroom: h after
        // UP_HOLD_PROVEN and a keyframe of h, well before UP_HOLD.
        cam.limits.budget = Some(1_000_000);
        cam.play(UP_HOLD_PROVEN.as_millis() as u64 + 600);
        assert_eq!(cam.selector.current(), Some(1), "{:?}", cam.reasons());
        assert!(UP_HOLD_PROVEN + Duration::from_millis(600) < UP_HOLD);
        // Still one layer at a time: f waits for its own proof.
        assert!(cam.selector.probe_target().is_some());
        // Back on q, under an estimate that does not move: h comes to fit because its own
        // rate dips (to 160 kbit/s), and that waits the full hold.
        cam.limits.budget = Some(600_000);
        cam.play(UP_HOLD.as_millis() as u64 + 600);
        assert_eq!(cam.selector.current(), Some(0));
        cam.bytes[1] = 200;
        let dipped = cam.now;
        while cam.selector.current() != Some(1) && cam.now < dipped + 10 * UP_HOLD {
            cam.play(100);
        }
        assert_eq!(cam.selector.current(), Some(1), "{:?}", cam.reasons());
        assert!(
            cam.now - dipped >= UP_HOLD,
            "up {:?} after h's rate dipped",
            cam.now - dipped
        );
    }

    #[test]
    fn the_view_caps_the_layer_and_a_hidden_page_pauses_until_shown() {
        use crate::media::{Quality, View};
        let mut cam = Camera::new();
        cam.limits.view = View {
            width: 390,
            height: 844,
            hidden: false,
            quality: Quality::Auto,
        };
        cam.play(2000);
        assert_eq!(
            cam.selector.current(),
            Some(1),
            "640x360 covers a 390-wide phone"
        );
        cam.limits.view.quality = Quality::Low;
        cam.play(600);
        assert_eq!(cam.selector.current(), Some(0));
        cam.limits.view.quality = Quality::High;
        cam.play(600);
        assert_eq!(cam.selector.current(), Some(2));
        // Hidden: nothing is forwarded.
        cam.limits.view.hidden = true;
        cam.play(100);
        let before = cam.forwarded.len();
        cam.play(1000);
        assert_eq!(cam.forwarded.len(), before);
        assert!(cam.selector.paused());
        // Shown again: from the next keyframe, under a new epoch.
        cam.limits.view.hidden = false;
        cam.play(600);
        assert_eq!(cam.selector.current(), Some(2));
        assert!(cam.forwarded.len() > before);
        assert_eq!(
            cam.switches.last().map(|s| s.reason),
            Some(SwitchReason::Start)
        );
    }
}
