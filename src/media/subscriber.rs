//! Per-subscriber stream rewriting: SSRC, sequence numbers and timestamps.
//!
//! A subscriber sees one steady stream per kind whatever happens upstream. Each upstream source
//! (a publisher session and SSRC) is an *epoch*. Within an epoch the output is the input plus a
//! fixed offset, so upstream gaps stay gaps (and can be NACKed back through the offset). When the
//! epoch changes — a dealer's OBS restarts, a new WHIP session replaces the old — the output
//! continues from the last sequence number + 1 and from the last timestamp plus the wall-clock
//! time that passed, so the player's jitter buffer sees a pause, not a jump.
//!
//! ```text
//!   (no output) --first packet [video: a keyframe start]--> mapped(epoch)
//!   mapped(e) --packet of epoch e--> out = in + offset
//!   mapped(e) --packet of epoch e' != e [video: keyframe start]--> mapped(e'), continuing
//!   mapped(e) --packet of epoch e' before its keyframe--> dropped, keyframe wanted
//!   mapped(e) --packet of epoch e' < e--> dropped (epochs only move forward)
//! ```

use std::time::Instant;

/// Is `a` newer than `b` in RTP's 16-bit sequence space?
pub fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// What the rewriter decided about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// Send it with these header values.
    Send { seq: u16, timestamp: u32 },
    /// Drop it: the subscriber's video must begin on a keyframe and this is not one.
    WaitForKeyframe,
    /// Drop it: it is from a source older than the one being sent (a replaced dealer's stragglers).
    Stale,
}

/// One outgoing stream (one kind) of one subscriber.
#[derive(Debug, Clone)]
pub struct OutStream {
    /// The SSRC this subscriber sees; fixed for the life of the session.
    pub ssrc: u32,
    clock_rate: u32,
    /// Video must start, and restart after a source change, on a keyframe.
    needs_keyframe: bool,
    epoch: Option<u64>,
    seq_offset: u16,
    ts_offset: u32,
    last: Option<Last>,
    /// The oldest sequence number sent under the current epoch.
    run_start: u16,
    /// The run before the current one, whose packets a player may still ask to be repaired.
    previous: Option<Run>,
    /// A run began with the last packet rewritten ([`OutStream::take_new_run`]).
    new_run: bool,
}

/// One epoch's run of a stream: its offsets and the sequence numbers it was sent under.
#[derive(Debug, Clone, Copy)]
struct Run {
    epoch: u64,
    seq_offset: u16,
    ts_offset: u32,
    first: u16,
    last: u16,
}

impl Run {
    fn holds(&self, out_seq: u16) -> bool {
        !seq_newer(self.first, out_seq) && !seq_newer(out_seq, self.last)
    }
}

#[derive(Debug, Clone, Copy)]
struct Last {
    seq: u16,
    timestamp: u32,
    at: Instant,
}

impl OutStream {
    pub fn new(
        ssrc: u32,
        clock_rate: u32,
        needs_keyframe: bool,
        first_seq: u16,
        first_ts: u32,
    ) -> Self {
        Self {
            ssrc,
            clock_rate: clock_rate.max(1),
            needs_keyframe,
            epoch: None,
            seq_offset: 0,
            ts_offset: 0,
            // A virtual "previous packet" so the first real one lands on first_seq/first_ts.
            last: None,
            run_start: first_seq,
            previous: None,
            new_run: false,
        }
        .with_start(first_seq, first_ts)
    }

    fn with_start(mut self, first_seq: u16, first_ts: u32) -> Self {
        self.seq_offset = first_seq;
        self.ts_offset = first_ts;
        self
    }

    /// The sequence number of the last packet sent.
    pub fn last_seq(&self) -> Option<u16> {
        self.last.map(|l| l.seq)
    }

    /// True once this stream has sent anything.
    pub fn started(&self) -> bool {
        self.last.is_some()
    }

    /// Whether the packet last rewritten began a run (a new source or layer, with new offsets);
    /// true once per run.
    pub fn take_new_run(&mut self) -> bool {
        std::mem::take(&mut self.new_run)
    }

    /// Whether the stream is waiting for a keyframe of `epoch` before it can send.
    pub fn waiting_for_keyframe(&self, epoch: u64) -> bool {
        self.needs_keyframe && self.epoch != Some(epoch)
    }

    /// Rewrites one packet of source `epoch`.
    pub fn rewrite(
        &mut self,
        epoch: u64,
        seq: u16,
        timestamp: u32,
        keyframe: bool,
        now: Instant,
    ) -> Rewrite {
        if self.epoch != Some(epoch) {
            if self.epoch.is_some_and(|current| epoch < current) {
                return Rewrite::Stale;
            }
            if self.needs_keyframe && !keyframe {
                return Rewrite::WaitForKeyframe;
            }
            let (out_seq, out_ts) = match self.last {
                Some(last) => {
                    let elapsed = now.saturating_duration_since(last.at);
                    let ticks =
                        (elapsed.as_micros() as u64 * self.clock_rate as u64 / 1_000_000).max(1);
                    (
                        last.seq.wrapping_add(1),
                        last.timestamp.wrapping_add(ticks as u32),
                    )
                }
                // Fresh stream: the offsets hold the chosen first values.
                None => (self.seq_offset, self.ts_offset),
            };
            if let (Some(old), Some(last)) = (self.epoch, self.last) {
                self.previous = Some(Run {
                    epoch: old,
                    seq_offset: self.seq_offset,
                    ts_offset: self.ts_offset,
                    first: self.run_start,
                    last: last.seq,
                });
            }
            self.seq_offset = out_seq.wrapping_sub(seq);
            self.ts_offset = out_ts.wrapping_sub(timestamp);
            self.epoch = Some(epoch);
            self.run_start = out_seq;
            self.new_run = true;
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = timestamp.wrapping_add(self.ts_offset);
        if seq_newer(self.run_start, out_seq) {
            // A late packet of this run, from before the one that started it.
            self.run_start = out_seq;
        }
        match self.last {
            Some(last) if !seq_newer(out_seq, last.seq) => {}
            _ => {
                self.last = Some(Last {
                    seq: out_seq,
                    timestamp: out_ts,
                    at: now,
                })
            }
        }
        Rewrite::Send {
            seq: out_seq,
            timestamp: out_ts,
        }
    }

    /// The header values a retransmission of source packet (`epoch`, `seq`, `timestamp`) gets,
    /// or None when that packet is from neither the epoch being sent nor the one before it.
    pub fn rewrite_retransmission(
        &self,
        epoch: u64,
        seq: u16,
        timestamp: u32,
    ) -> Option<(u16, u32)> {
        let (seq_offset, ts_offset) = if self.epoch == Some(epoch) {
            (self.seq_offset, self.ts_offset)
        } else {
            let run = self.previous.filter(|r| r.epoch == epoch)?;
            (run.seq_offset, run.ts_offset)
        };
        Some((
            seq.wrapping_add(seq_offset),
            timestamp.wrapping_add(ts_offset),
        ))
    }

    /// The source epoch and sequence number of an outgoing packet (to answer a NACK from the
    /// buffers): of the current run, or of the one before it (a player asks for packets lost
    /// just before a layer switch or a dealer's reconnect after it). None for a number sent in
    /// neither, which must not be answered with whatever the current run's offset maps it to.
    pub fn source_seq(&self, out_seq: u16) -> Option<(u64, u16)> {
        let epoch = self.epoch?;
        if !seq_newer(self.run_start, out_seq) {
            return Some((epoch, out_seq.wrapping_sub(self.seq_offset)));
        }
        let run = self.previous.filter(|r| r.holds(out_seq))?;
        Some((run.epoch, out_seq.wrapping_sub(run.seq_offset)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sent(r: Rewrite) -> (u16, u32) {
        match r {
            Rewrite::Send { seq, timestamp } => (seq, timestamp),
            other => panic!("dropped: {other:?}"),
        }
    }

    #[test]
    fn video_starts_on_a_keyframe_and_keeps_upstream_gaps() {
        let t0 = Instant::now();
        let mut s = OutStream::new(7, 90_000, true, 1000, 5000);
        assert_eq!(s.rewrite(1, 40, 900, false, t0), Rewrite::WaitForKeyframe);
        assert_eq!(sent(s.rewrite(1, 41, 3900, true, t0)), (1000, 5000));
        assert_eq!(sent(s.rewrite(1, 42, 3900, false, t0)), (1001, 5000));
        assert_eq!(
            sent(s.rewrite(1, 45, 6900, false, t0)),
            (1004, 8000),
            "a gap upstream stays a gap"
        );
        assert_eq!(s.source_seq(1002), Some((1, 43)));
    }

    #[test]
    fn a_new_source_continues_with_no_jump_larger_than_the_pause() {
        let t0 = Instant::now();
        let mut s = OutStream::new(7, 90_000, true, 65534, 0);
        sent(s.rewrite(1, 10, 100, true, t0));
        let (last_seq, last_ts) = sent(s.rewrite(1, 11, 3100, false, t0));
        assert_eq!(last_seq, 65535);
        // The dealer reconnects 2 s later with a new SSRC, new sequence numbers and timestamps.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(
            s.rewrite(2, 30000, 777, false, t1),
            Rewrite::WaitForKeyframe
        );
        let (seq, ts) = sent(s.rewrite(2, 30001, 888, true, t1));
        assert_eq!(seq, 0, "sequence continues across the wrap");
        assert_eq!(
            ts.wrapping_sub(last_ts),
            180_000,
            "timestamp advances by the 2 s pause"
        );
        assert_eq!(
            sent(s.rewrite(2, 30002, 888 + 3000, false, t1)),
            (1, ts + 3000)
        );
        assert_eq!(
            s.rewrite(1, 12, 6100, true, t1),
            Rewrite::Stale,
            "the old source never comes back"
        );
    }

    #[test]
    fn a_nack_after_a_switch_maps_to_the_run_it_was_sent_in_and_never_to_another() {
        let t0 = Instant::now();
        let mut s = OutStream::new(7, 90_000, true, 1000, 0);
        // Layer A's run: source 500..=504 sent as 1000..=1004.
        sent(s.rewrite(1, 500, 0, true, t0));
        for seq in 501..=504 {
            sent(s.rewrite(1, seq, 3000, false, t0));
        }
        // Switch to layer B at its keyframe: source 9000.. sent as 1005..
        assert_eq!(sent(s.rewrite(2, 9000, 70_000, true, t0)).0, 1005);
        sent(s.rewrite(2, 9001, 70_000, false, t0));
        // A packet of A's run, lost just before the switch, is repaired from A's run, with the
        // header it was first sent with.
        assert_eq!(s.source_seq(1003), Some((1, 503)));
        assert_eq!(s.rewrite_retransmission(1, 503, 3000), Some((1003, 3000)));
        assert_eq!(s.source_seq(1006), Some((2, 9001)));
        // A number sent in neither run maps to nothing (not to B's packet 8990).
        assert_eq!(s.source_seq(995), None);
        // Two switches on, A's run is gone.
        sent(s.rewrite(3, 40, 0, true, t0));
        assert_eq!(s.source_seq(1003), None);
        assert_eq!(s.rewrite_retransmission(1, 503, 3000), None);
        assert_eq!(s.source_seq(1006), Some((2, 9001)));
    }

    #[test]
    fn audio_needs_no_keyframe_and_reordering_does_not_move_the_high_water_mark() {
        let t0 = Instant::now();
        let mut s = OutStream::new(9, 48_000, false, 100, 0);
        assert_eq!(sent(s.rewrite(1, 500, 960, false, t0)), (100, 0));
        assert_eq!(sent(s.rewrite(1, 502, 2880, false, t0)), (102, 1920));
        assert_eq!(sent(s.rewrite(1, 501, 1920, false, t0)), (101, 960));
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(sent(s.rewrite(2, 9, 0, false, t1)), (103, 1920 + 960));
    }

    #[test]
    fn sequence_comparison_wraps() {
        assert!(seq_newer(1, 65535));
        assert!(!seq_newer(65535, 1));
        assert!(!seq_newer(5, 5));
    }
}
