//! A player's `video.map`: which frame of the table's camera each of its video frames is.
//!
//! A `round.result` names its frame as `media_ts`, an RTP timestamp of the camera's reference
//! layer in the clock `media_clock` (`frame_clock.rs`). A player's video carries other
//! timestamps: its stream is rewritten (`subscriber.rs`) with an offset that changes at each run
//! (a layer switch, a dealer who reconnects), and another layer has a clock of its own. So each
//! player is told, privately, at the start of each run:
//!
//! ```text
//! {"type":"video.map","rtp":R,"media_ts":M,"media_clock":C}
//! ```
//!
//! "your frame with RTP timestamp R is the camera's frame M in clock C, and your frames after it
//! follow at the same rate, until the next `video.map`". The public `round.result` stays the same
//! bytes for every player; the player maps it to its own frames (`tablecast.js`,
//! `table.onFrame`).
//!
//! Sans-IO, one per player, owned by its worker. A run's anchor is found as soon as the camera's
//! [`FrameClock`] can relate the run's layer to the reference layer: at once for the reference
//! layer or through both layers' sender reports; before the reports, from when the layers'
//! frames arrived (within a frame), and then refined until the reports come.

use super::frame_clock::{FrameClock, NamedFrame};
use crate::protocol::SessionMessage;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A player's WebSocket, as its worker sends `video.map` to it: a player whose table events
/// come over a WebSocket names its WHEP session in `video.view`, and gets its maps there.
pub type MapSocket = mpsc::Sender<Arc<str>>;
/// `video.map`s queued for one WebSocket at most: they come one per layer switch.
pub const MAP_QUEUE: usize = 8;

/// How often a run's anchor is looked for while the camera's clock cannot give it.
const RETRY: Duration = Duration::from_millis(100);
/// How often a guessed anchor is looked at again, until the sender reports make it exact.
const REFINE: Duration = Duration::from_millis(500);
/// A run whose anchor is not exact by then keeps the best it had: no dealer publishes the
/// camera on this node (an edge of a cascade), or the dealer sends no sender reports.
const GIVE_UP: Duration = Duration::from_secs(10);

/// The player's frame `rtp` is the camera's frame `frame`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub rtp: u32,
    pub frame: NamedFrame,
}

impl Anchor {
    /// The `video.map` message. `stream`: the SSRC of the stream it is of, when the session has
    /// several (a relay to an edge node has one per layer). `session`: the WHEP session it is
    /// of, on a WebSocket (which outlives sessions; a data channel is its session's own).
    pub fn message(&self, stream: Option<u32>, session: Option<&str>) -> String {
        crate::protocol::encode(&SessionMessage::VideoMap {
            ssrc: stream,
            session: session.map(str::to_owned),
            rtp: self.rtp,
            media_ts: self.frame.media_ts,
            media_clock: self.frame.clock,
        })
    }
}

/// A relay's `video.map` as an edge node reads it: the relay stream `ssrc`'s frame `rtp` is
/// the camera's `frame`. None for anything else.
pub fn parse_relay_map(text: &[u8]) -> Option<(u32, Anchor)> {
    let SessionMessage::VideoMap {
        ssrc: Some(ssrc),
        rtp,
        media_ts,
        media_clock,
        ..
    } = serde_json::from_slice(text).ok()?
    else {
        return None;
    };
    Some((
        ssrc,
        Anchor {
            rtp,
            frame: NamedFrame {
                media_ts,
                clock: media_clock,
            },
        },
    ))
}

/// The run being anchored: its first frame as sent, and as the camera's layer had it.
#[derive(Debug, Clone, Copy)]
struct Run {
    rtp: u32,
    ssrc: u32,
    ts: u32,
    since: Instant,
}

/// One player's mapping (see the module doc).
#[derive(Debug, Default)]
pub struct VideoMap {
    /// The anchor of the current run, once found.
    anchor: Option<Anchor>,
    /// Whether the player has been sent `anchor`.
    delivered: bool,
    /// The current run, while its anchor is missing or guessed.
    run: Option<Run>,
    /// When to look next; None when there is nothing to do.
    next: Option<Instant>,
    /// The player's WebSocket, when its `video.view` came on one.
    socket: Option<MapSocket>,
    /// The SSRC of the stream this map is of, named in its messages (a relay's layers).
    stream: Option<u32>,
    /// The current run's first frame, as sent and as the source had it, kept after it is
    /// anchored: an edge node re-anchors it when the origin's map of its relay stream changes.
    current: Option<Run>,
}

impl VideoMap {
    /// The map is of one of several streams of a session: its messages name its SSRC.
    pub fn set_stream(&mut self, ssrc: u32) {
        self.stream = Some(ssrc);
    }

    /// A new run of the player's video began: its first packet went out with timestamp `rtp`,
    /// and came from layer `ssrc` with timestamp `ts`.
    pub fn on_run(&mut self, rtp: u32, ssrc: u32, ts: u32, now: Instant) {
        let run = Run {
            rtp,
            ssrc,
            ts,
            since: now,
        };
        self.run = Some(run);
        self.current = Some(run);
        self.next = Some(now);
    }

    /// On an edge node: the origin's map of relay stream `ssrc` changed from its frame `rtp`
    /// on (the dealer reconnected at the origin; the relay stream itself runs on unchanged). A
    /// player whose run comes from that stream is anchored again at that frame.
    pub fn on_relay_anchor(&mut self, ssrc: u32, rtp: u32, now: Instant) {
        if let Some(run) = self.current.filter(|r| r.ssrc == ssrc) {
            let offset = run.rtp.wrapping_sub(run.ts);
            self.on_run(rtp.wrapping_add(offset), ssrc, rtp, now);
        }
    }

    /// The player's `control` channel (re)opened: it has been told nothing yet.
    pub fn on_channel_open(&mut self, now: Instant) {
        self.delivered = false;
        if self.anchor.is_some() {
            self.next = Some(self.next.map_or(now, |t| t.min(now)));
        }
    }

    /// The player's `video.view` came on a WebSocket: its maps go there while it has no
    /// `control` channel. A new socket (the player reconnected it) is told the current map.
    pub fn on_socket(&mut self, socket: MapSocket, now: Instant) {
        if self
            .socket
            .as_ref()
            .is_some_and(|s| s.same_channel(&socket))
        {
            return;
        }
        self.socket = Some(socket);
        self.on_channel_open(now);
    }

    /// The player's WebSocket for maps, while it is open.
    pub fn socket(&mut self) -> Option<&MapSocket> {
        if self.socket.as_ref().is_some_and(|s| s.is_closed()) {
            self.socket = None;
        }
        self.socket.as_ref()
    }

    /// Whether [`VideoMap::poll`] has anything to do now: one comparison per packet otherwise.
    pub fn due(&self, now: Instant) -> bool {
        self.next.is_some_and(|t| now >= t)
    }

    /// Looks for the current run's anchor in the camera's `clock` (None when no dealer
    /// publishes the camera on this node), and returns it when the player has not been told
    /// it: the caller sends it, and calls [`VideoMap::not_sent`] if it could not. `can_send`:
    /// the player has a `control` channel or WebSocket open; an anchor found while it has not
    /// waits for one.
    pub fn poll(
        &mut self,
        clock: Option<&FrameClock>,
        can_send: bool,
        now: Instant,
    ) -> Option<Anchor> {
        self.next = None;
        if let Some(run) = self.run {
            match clock.and_then(|c| c.to_reference(run.ssrc, run.ts)) {
                Some((frame, exact)) => {
                    let anchor = Anchor {
                        rtp: run.rtp,
                        frame,
                    };
                    if self.anchor != Some(anchor) {
                        self.anchor = Some(anchor);
                        self.delivered = false;
                    }
                    if exact {
                        self.run = None;
                    } else {
                        self.next = Some(now + REFINE);
                    }
                }
                None => {
                    // The run's frames belong to no known frame yet: an older run's anchor
                    // would map them wrongly, so it goes.
                    if self.anchor.is_some_and(|a| a.rtp != run.rtp) {
                        self.anchor = None;
                    }
                    self.next = Some(now + RETRY);
                }
            }
            if self.next.is_some() && now.duration_since(run.since) >= GIVE_UP {
                self.run = None;
                self.next = None;
            }
        }
        if self.delivered {
            return None;
        }
        let anchor = self.anchor?;
        if !can_send {
            // Sent when the channel opens ([`VideoMap::on_channel_open`]).
            return None;
        }
        self.delivered = true;
        Some(anchor)
    }

    /// The anchor [`VideoMap::poll`] gave could not be sent (a full queue, a channel that
    /// refused it): it is tried again shortly.
    pub fn not_sent(&mut self, now: Instant) {
        self.delivered = false;
        let again = now + RETRY;
        self.next = Some(self.next.map_or(again, |t| t.min(again)));
    }

    /// The SSRC of the stream this map is of, when the session has several.
    pub fn stream(&self) -> Option<u32> {
        self.stream
    }

    /// The anchor of the current run, when found.
    pub fn anchor(&self) -> Option<Anchor> {
        self.anchor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame_clock::VIDEO_CLOCK_RATE;

    const FRAME: u32 = 3_000;

    /// A player switched from the reference layer to another: each run is anchored, the
    /// reference layer's at once and exactly, the other's from its arrivals and then, once both
    /// layers' sender reports came, exactly; each anchor is sent once, when it changes.
    #[test]
    fn each_run_is_anchored_and_sent_once() {
        let clock = FrameClock::new(VIDEO_CLOCK_RATE);
        let t0 = Instant::now();
        let (low, high) = (10u32, 20u32);
        let (low0, high0) = (5_000u32, 900_000u32);
        for n in 0..30u32 {
            let at = t0 + Duration::from_micros(u64::from(n) * 33_333);
            clock.on_packet(low, low0 + n * FRAME, at);
            clock.on_packet(high, high0 + n * FRAME, at + Duration::from_millis(2));
        }
        let mut map = VideoMap::default();
        let now = t0 + Duration::from_secs(1);
        assert!(!map.due(now));
        // The first run: the reference layer's frame 3 sent as 777.
        map.on_run(777, low, low0 + 3 * FRAME, now);
        assert!(map.due(now));
        // No channel yet: nothing goes, and nothing is due until it opens.
        assert_eq!(map.poll(Some(&clock), false, now), None);
        assert!(!map.due(now + REFINE));
        map.on_channel_open(now);
        assert!(map.due(now));
        let sent = map
            .poll(Some(&clock), true, now)
            .unwrap()
            .message(None, None);
        assert_eq!(
            sent,
            format!(
                r#"{{"type":"video.map","rtp":777,"media_ts":{},"media_clock":{low}}}"#,
                low0 + 3 * FRAME
            )
        );
        assert!(!map.due(now + GIVE_UP));
        // A switch to the top layer at its frame 20, sent as 90_000: guessed from arrivals.
        map.on_run(90_000, high, high0 + 20 * FRAME, now);
        let guessed = map
            .poll(Some(&clock), true, now)
            .unwrap()
            .message(None, None);
        assert!(guessed.contains(&format!(r#""media_ts":{}"#, low0 + 20 * FRAME)));
        assert!(!map.due(now) && map.due(now + REFINE));
        // The same guess again is not resent.
        assert_eq!(map.poll(Some(&clock), true, now + REFINE), None);
        // Reports on both layers, agreeing with the guess: exact, nothing new to send, done.
        let ntp = crate::media::frame_clock::ntp_from_unix_ms(1_700_000_000_000);
        clock.on_sender_report(low, ntp, low0 + 10 * FRAME);
        clock.on_sender_report(high, ntp, high0 + 10 * FRAME);
        assert_eq!(map.poll(Some(&clock), true, now + 2 * REFINE), None);
        assert!(!map.due(now + GIVE_UP));
        assert_eq!(map.anchor().map(|a| a.rtp), Some(90_000));
    }

    /// On an edge: the origin's map of a relay stream maps the edge player's frames, and when
    /// it changes (the dealer reconnected at the origin), the player is anchored again at the
    /// frame it changed from, with its own offset.
    #[test]
    fn an_edge_player_follows_the_origins_map_of_its_relay_stream() {
        let relay = 0xabcd_u32;
        let text = format!(
            r#"{{"type":"video.map","ssrc":{relay},"rtp":1000,"media_ts":50,"media_clock":7}}"#
        );
        let (ssrc, anchor) = parse_relay_map(text.as_bytes()).expect("a relay map");
        assert_eq!(ssrc, relay);
        assert_eq!(parse_relay_map(br#"{"type":"pong","ssrc":1}"#), None);
        assert_eq!(parse_relay_map(b"not json"), None);
        let clock = FrameClock::new(VIDEO_CLOCK_RATE);
        clock.set_relayed(ssrc, anchor.rtp, anchor.frame);
        let t0 = Instant::now();
        let mut map = VideoMap::default();
        // The player's run starts at relay frame 7000, sent as 100.
        map.on_run(100, relay, 7_000, t0);
        let sent = map
            .poll(Some(&clock), true, t0)
            .expect("a map")
            .message(None, None);
        assert_eq!(
            sent,
            r#"{"type":"video.map","rtp":100,"media_ts":6050,"media_clock":7}"#
        );
        // The dealer reconnects at the origin: from relay frame 40_000 on, clock 9 from 0.
        let new = NamedFrame {
            media_ts: 0,
            clock: 9,
        };
        clock.set_relayed(relay, 40_000, new);
        map.on_relay_anchor(0x9999, 40_000, t0);
        assert!(!map.due(t0), "another stream's map is not this player's");
        map.on_relay_anchor(relay, 40_000, t0);
        let sent = map
            .poll(Some(&clock), true, t0)
            .expect("a new map")
            .message(None, None);
        // Relay 40_000 is the player's 40_000 - 7_000 + 100.
        assert_eq!(
            sent,
            r#"{"type":"video.map","rtp":33100,"media_ts":0,"media_clock":9}"#
        );
        // A relay's own map names its stream.
        let mut of_relay = VideoMap::default();
        of_relay.set_stream(relay);
        of_relay.on_run(1000, 5, 50, t0);
        let source = FrameClock::new(VIDEO_CLOCK_RATE);
        source.on_packet(5, 50, t0);
        assert_eq!(
            of_relay
                .poll(Some(&source), true, t0)
                .map(|a| a.message(of_relay.stream(), None)),
            Some(format!(
                r#"{{"type":"video.map","ssrc":{relay},"rtp":1000,"media_ts":50,"media_clock":5}}"#
            ))
        );
        // On a WebSocket a map names its session; one that could not be sent goes again.
        let anchor = map.anchor().expect("an anchor");
        assert_eq!(
            anchor.message(None, Some("s-1")),
            r#"{"type":"video.map","session":"s-1","rtp":33100,"media_ts":0,"media_clock":9}"#
        );
        assert_eq!(map.poll(Some(&clock), true, t0), None);
        map.not_sent(t0);
        assert!(!map.due(t0) && map.due(t0 + RETRY));
        assert_eq!(map.poll(Some(&clock), true, t0 + RETRY), Some(anchor));
    }

    /// No clock (no dealer on this node): nothing is sent, the wrong old anchor is dropped,
    /// and the run is given up on after a while.
    #[test]
    fn without_a_clock_nothing_is_claimed() {
        let clock = FrameClock::new(VIDEO_CLOCK_RATE);
        let t0 = Instant::now();
        clock.on_packet(1, 100, t0);
        let mut map = VideoMap::default();
        map.on_run(5, 1, 100, t0);
        assert!(map.poll(Some(&clock), true, t0).is_some());
        map.on_run(9_000, 2, 4_000, t0);
        assert_eq!(map.poll(None, true, t0), None);
        assert_eq!(map.anchor(), None);
        assert!(map.due(t0 + RETRY));
        assert_eq!(map.poll(None, true, t0 + GIVE_UP), None);
        assert!(!map.due(t0 + GIVE_UP * 2));
    }
}
