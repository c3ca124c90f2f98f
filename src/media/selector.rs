//! Which layer one player gets (see `simulcast.rs` for the camera's layers and the state
//! diagram): the highest flowing layer its view calls for and its link carries, switched at a
//! keyframe of the layer switched to, under a fresh epoch of the player's own.
//!
//! Sans-IO: time is an input, and nothing here allocates per packet.

use super::simulcast::{KEYFRAME_RETRY, LayerStates, MAX_LAYERS};
use std::time::{Duration, Instant};

/// A layer drawn at most this much larger than its picture is large enough.
pub const UPSCALE_ALLOWED: f64 = 1.15;
/// Kept aside from a player's estimate for its audio, which always goes first.
pub const AUDIO_RESERVE_BPS: u64 = 64_000;
/// Switching up needs the estimate to carry the higher layer's rate times this.
pub const UP_HEADROOM: f64 = 1.25;
/// A higher layer must fit (or, with no estimate, be wanted) this long before a switch up.
pub const UP_HOLD: Duration = Duration::from_secs(2);
/// The hold instead just after the estimate rose on a probe the link carried (a transport-cc
/// player's estimate rises no other way, see `probe.rs`): the rise is proven already, and
/// holding it would only add to the time a freed link waits for its picture. Long enough for
/// the estimate to fall back first if the probe left a queue behind it. A layer that fits
/// because its own rate dipped, under an estimate that did not move, still waits [`UP_HOLD`].
pub const UP_HOLD_PROVEN: Duration = Duration::from_millis(500);
/// A player the link held below its layer this recently goes up one layer at a time, each after
/// [`UP_HOLD`], even once its estimate no longer limits it: the estimator lifts a limit it has
/// no fresh evidence of, and the step up is then a trial.
pub const LIMITED_MEMORY: Duration = Duration::from_secs(30);
/// How often a player's layer is chosen again.
pub const DECIDE_EVERY: Duration = Duration::from_millis(100);

/// Why a player's layer changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchReason {
    /// The first layer the player gets (also after a pause).
    Start,
    /// The layer being forwarded stopped; another took over.
    LayerStopped,
    /// A higher layer fits (again).
    Up,
    /// The player's link does not carry the layer.
    Link,
    /// The player's rendered size or quality choice calls for another layer.
    View,
}

impl SwitchReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchReason::Start => "start",
            SwitchReason::LayerStopped => "layer stopped",
            SwitchReason::Up => "higher layer fits",
            SwitchReason::Link => "link estimate",
            SwitchReason::View => "rendered size or quality choice",
        }
    }
}

/// A change of a player's layer, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub from: Option<usize>,
    pub to: usize,
    pub reason: SwitchReason,
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it as a packet of the player's source `epoch`.
    Forward { epoch: u64 },
    /// Not the layer this player gets.
    Drop,
}

/// What a player's layer must fit: its link and how it shows the video.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// What the player's link carries, bits per second; None: no limit known.
    pub budget: Option<u64>,
    /// The budget rises only on a probe the link carried ([`UP_HOLD_PROVEN`]).
    pub proven: bool,
    pub view: super::View,
}

/// Chooses the layer one player gets (see the module doc): switched only at a keyframe of the
/// layer switched to, under a fresh epoch of the player's own, so its rewriter
/// (`subscriber.rs`) splices the layers into one continuous stream.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// The layer being forwarded, and the source epoch of that layer's run.
    current: Option<(usize, u64)>,
    /// The player's epoch for it.
    epoch: u64,
    /// The run before: (player's epoch, layer, source epoch), whose packets the player may still
    /// ask to be repaired.
    previous: Option<(u64, usize, u64)>,
    target: Option<(usize, SwitchReason)>,
    last_request: Option<Instant>,
    next_decision: Option<Instant>,
    /// A higher layer that fits, and since when.
    fits_since: Option<(usize, Instant)>,
    /// When the link last held the player below the layer its view calls for.
    limited_at: Option<Instant>,
    /// The budget last seen, and when it last rose.
    last_budget: Option<u64>,
    budget_rose_at: Option<Instant>,
    /// While the link holds the player below the layer its view calls for: the estimate the
    /// next layer up needs, bits per second (what a probe of the link should send).
    probe_target: Option<u64>,
    /// The player's video is paused (a hidden page).
    paused: bool,
    /// A switch that happened, until taken by `poll_switch`.
    switched: Option<Switch>,
    /// Layers a keyframe should be asked of (bits), until taken.
    keyframe_wanted: u8,
    /// The player's VP8 numbering (`vp8.rs`): continuous across its layers.
    pub vp8: super::vp8::Vp8Numbering,
}

impl Selector {
    /// The layer being forwarded.
    pub fn current(&self) -> Option<usize> {
        self.current.map(|(l, _)| l)
    }

    /// The layer and source epoch of the player's `epoch`: the run being forwarded, or the one
    /// before it (a NACK's packet is looked up there).
    pub fn source_of(&self, epoch: u64) -> Option<(usize, u64)> {
        if epoch == self.epoch {
            return self.current;
        }
        self.previous
            .filter(|&(e, _, _)| e == epoch)
            .map(|(_, layer, source)| (layer, source))
    }

    /// The layer a switch is waiting for a keyframe of.
    pub fn pending(&self) -> Option<usize> {
        self.target.map(|(t, _)| t)
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    /// The estimate the next layer up needs, while the link holds the player below the layer
    /// its view calls for (see `estimate.rs` on probing).
    pub fn probe_target(&self) -> Option<u64> {
        self.probe_target.filter(|_| !self.paused)
    }

    /// Decides about a packet of layer `layer` (of its source epoch `source`). `new_epoch` gives
    /// a fresh epoch, taken when the player's source changes.
    #[allow(clippy::too_many_arguments)]
    pub fn on_packet(
        &mut self,
        states: &LayerStates,
        layer: usize,
        source: u64,
        keyframe: bool,
        limits: Limits,
        now: Instant,
        mut new_epoch: impl FnMut() -> u64,
    ) -> Verdict {
        // Chosen again every DECIDE_EVERY, and at a keyframe of another layer, which may be
        // the one to switch to.
        if self.next_decision.is_none_or(|t| now >= t)
            || (keyframe && self.current() != Some(layer))
        {
            self.decide(states, limits, now);
            self.next_decision = Some(now + DECIDE_EVERY);
        }
        if let Some((target, reason)) = self.target {
            if target == layer && keyframe {
                self.switched = Some(Switch {
                    from: self.current(),
                    to: target,
                    reason,
                });
                // The run before stays repairable, except after a switch down because the link
                // did not carry it: its lost packets are frames the keyframe just sent makes
                // obsolete, and repairing them would take the link from that keyframe (on a
                // 600 kbit/s link, seconds of 1280x720 repairs before the first 320x180 frame).
                self.previous = match self.current {
                    Some((layer, source)) if reason != SwitchReason::Link => {
                        Some((self.epoch, layer, source))
                    }
                    _ => None,
                };
                self.current = Some((target, source));
                self.epoch = new_epoch();
                self.target = None;
                self.last_request = None;
            } else if self
                .last_request
                .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_RETRY)
            {
                self.keyframe_wanted |= 1 << target;
                self.last_request = Some(now);
            }
        }
        match &mut self.current {
            Some((l, e)) if *l == layer => {
                if *e != source {
                    // The layer's source restarted (a new SSRC): a new epoch, which the
                    // rewriter starts at that source's first keyframe.
                    self.previous = Some((self.epoch, *l, *e));
                    *e = source;
                    self.epoch = new_epoch();
                }
                Verdict::Forward { epoch: self.epoch }
            }
            _ => Verdict::Drop,
        }
    }

    fn decide(&mut self, states: &LayerStates, limits: Limits, now: Instant) {
        if limits.view.hidden {
            self.current = None;
            self.target = None;
            self.fits_since = None;
            self.paused = true;
            return;
        }
        let was_paused = std::mem::take(&mut self.paused);
        let current = self.current();
        let Some((want, reason)) = self.choose(states, limits, now) else {
            return;
        };
        if Some(want) == current {
            self.target = None;
            return;
        }
        let reason = if current.is_none() || was_paused {
            SwitchReason::Start
        } else {
            reason
        };
        if self.target.map(|(t, _)| t) != Some(want) {
            self.target = Some((want, reason));
            self.last_request = None;
        }
    }

    /// The layer the player should get, and why it differs from the current one.
    fn choose(
        &mut self,
        states: &LayerStates,
        limits: Limits,
        now: Instant,
    ) -> Option<(usize, SwitchReason)> {
        let current = self.current();
        // The layers that can be switched to, lowest first.
        let mut cands = [0usize; MAX_LAYERS];
        let mut n = 0;
        for (i, s) in states.iter().enumerate() {
            if s.eligible || (Some(i) == current && s.flowing) {
                cands[n] = i;
                n += 1;
            }
        }
        let cands = &mut cands[..n];
        if cands.is_empty() {
            // Nothing flows: keep what we had; there is nothing to switch to.
            return None;
        }
        cands.sort_by_key(|&i| (states[i].rank(), i));
        let pos_of = |layer: Option<usize>| layer.and_then(|l| cands.iter().position(|&c| c == l));
        let cur = pos_of(current);
        let stopped = current.is_some() && cur.is_none();
        let view = limits.view;
        if let (Some(b), Some(last)) = (limits.budget, self.last_budget)
            && b > last + last / 20
        {
            self.budget_rose_at = Some(now);
        }
        self.last_budget = limits.budget;
        // The highest layer the player's view calls for.
        let cap = match view.quality {
            super::Quality::Low => 0,
            super::Quality::High => n - 1,
            super::Quality::Auto if view.width == 0 || view.height == 0 => n - 1,
            super::Quality::Auto => cands
                .iter()
                .position(|&i| states[i].covers(view.width, view.height))
                .unwrap_or(n - 1),
        };
        // The highest layer up to that which the link carries.
        let (pick, link_bound) = match limits.budget {
            Some(budget) => {
                let budget = budget.saturating_sub(AUDIO_RESERVE_BPS) as f64;
                let fits = |pos: usize| {
                    let headroom = if cur.is_none_or(|c| pos > c) {
                        UP_HEADROOM
                    } else {
                        1.0
                    };
                    f64::from(states[cands[pos]].bitrate) * headroom <= budget
                };
                let pick = (0..=cap).rev().find(|&p| fits(p)).unwrap_or(0);
                self.probe_target = (pick < cap).then(|| {
                    (f64::from(states[cands[pick + 1]].bitrate) * UP_HEADROOM) as u64
                        + AUDIO_RESERVE_BPS
                });
                (pick, pick < cap)
            }
            None => {
                self.probe_target = None;
                (cap, false)
            }
        };
        let mut pick = pick;
        let recently_limited = self
            .limited_at
            .is_some_and(|t| now.saturating_duration_since(t) < LIMITED_MEMORY);
        if link_bound {
            self.limited_at = Some(now);
        }
        if let Some(c) = cur
            && pick > c
            && (limits.budget.is_some() || recently_limited)
        {
            // Up one layer at a time, each once it has fit for a while.
            let next = cands[c + 1];
            let just_proven = limits.proven
                && self
                    .budget_rose_at
                    .is_some_and(|t| now.saturating_duration_since(t) < UP_HOLD);
            let hold = if just_proven { UP_HOLD_PROVEN } else { UP_HOLD };
            match self.fits_since {
                // Granted until the switch is made (at the next layer's keyframe).
                Some((l, since)) if l == next && now.saturating_duration_since(since) >= hold => {
                    pick = c + 1;
                }
                Some((l, _)) if l == next => pick = c,
                _ => {
                    self.fits_since = Some((next, now));
                    pick = c;
                }
            }
        } else {
            self.fits_since = None;
        }
        let reason = if stopped {
            SwitchReason::LayerStopped
        } else if cur.is_some_and(|c| pick > c) {
            SwitchReason::Up
        } else if link_bound {
            SwitchReason::Link
        } else {
            SwitchReason::View
        };
        Some((cands[pick], reason))
    }

    /// The switch made by the last packets, if any.
    pub fn poll_switch(&mut self) -> Option<Switch> {
        self.switched.take()
    }

    /// The layers a keyframe should be requested of (bits), if any.
    pub fn poll_keyframe_request(&mut self) -> u8 {
        std::mem::take(&mut self.keyframe_wanted)
    }
}
