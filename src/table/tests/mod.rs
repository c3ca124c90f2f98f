//! Table core tests, driven by simulated time: no sleeps, no sockets.
//!
//! `Sim` owns a table and a clock, drains every output after each input, and keeps what a
//! store (records), the watchers (public events) and the players (private replies) received.

mod commands;
mod fuzz;
mod replay;
mod rounds;

use super::*;
use crate::protocol::{ClientMessage, LastRound, SequencedEvent, SpotId, TotalsView, WireAmount};

pub(super) fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

pub(super) fn bet_id(s: &str) -> BetId {
    BetId::parse(s).unwrap()
}

pub(super) fn spot(s: &str) -> SpotId {
    SpotId::parse(s).unwrap()
}

pub(super) fn outcome(s: &str) -> Outcome {
    Outcome::single(spot(s))
}

pub(super) fn place(id: &str, round: u64, spot: &str, amount: u64) -> PlaceBet {
    PlaceBet {
        id: bet_id(id),
        round: RoundId(round),
        spot: spot.to_owned(),
        amount: WireAmount::from(amount),
    }
}

/// The demo table without auto-open: 15 s window, 200 ms totals.
pub(super) fn manual_config() -> TableConfig {
    TableConfig {
        auto_open_pause_secs: None,
        ..TableConfig::demo_baccarat()
    }
}

pub(super) struct Sim {
    pub table: Table,
    pub now: ServerTime,
    pub events: Vec<SequencedEvent>,
    pub records: Vec<Record>,
    pub private: Vec<(UserId, Reply)>,
}

pub(super) const T0: ServerTime = ServerTime(1_700_000_000_000);

impl Sim {
    pub fn new(config: TableConfig) -> Self {
        Self::from_table(Table::new(config).unwrap(), T0)
    }

    pub fn from_table(table: Table, now: ServerTime) -> Self {
        let mut sim = Self {
            table,
            now,
            events: vec![],
            records: vec![],
            private: vec![],
        };
        sim.drain();
        sim
    }

    /// Polls until `Timeout`, filing each output where its receiver would.
    pub fn drain(&mut self) {
        loop {
            let out = self.table.poll_output();
            if let Some(r) = out.record() {
                self.records.push(r);
            }
            match out {
                Output::Timeout(_) => break,
                Output::Record(_) => {}
                Output::Public(ev) => self.events.push(ev),
                Output::Private { user, reply } => self.private.push((user, reply)),
            }
        }
    }

    /// Moves the clock forward `ms`, running every deadline on the way as a real actor would.
    pub fn advance(&mut self, ms: u64) {
        let target = self.now.plus_millis(ms);
        while let Some(t) = self.table.poll_timeout().filter(|&t| t <= target) {
            self.now = self.now.max(t);
            self.table.handle_timeout(self.now);
            self.drain();
        }
        self.now = target;
    }

    pub fn bet(&mut self, who: &str, req: PlaceBet) -> Reply {
        let before = self.private.len();
        self.table.handle_bet(self.now, &user(who), req);
        self.drain();
        self.single_reply_since(before, who)
    }

    pub fn cancel(&mut self, who: &str, id: &str) -> Reply {
        let before = self.private.len();
        self.table.handle_cancel(self.now, &user(who), &bet_id(id));
        self.drain();
        self.single_reply_since(before, who)
    }

    fn single_reply_since(&self, before: usize, who: &str) -> Reply {
        let new = &self.private[before..];
        assert_eq!(
            new.len(),
            1,
            "exactly one private reply per command: {new:?}"
        );
        assert_eq!(new[0].0, user(who));
        new[0].1.clone()
    }

    pub fn open(&mut self) -> RoundId {
        let r = self.table.handle_open(self.now).unwrap();
        self.drain();
        r
    }

    pub fn close(&mut self) {
        self.table.handle_close(self.now).unwrap();
        self.drain();
    }

    pub fn result(&mut self, won: &str) {
        self.table
            .handle_result(self.now, outcome(won), Some(90_000), Some(7))
            .unwrap();
        self.drain();
    }

    pub fn void(&mut self) {
        self.table.handle_void(self.now, None).unwrap();
        self.drain();
    }

    pub fn totals_events(&self) -> Vec<(ServerTime, TotalsView)> {
        self.events
            .iter()
            .filter_map(|e| match &e.event {
                PublicEvent::Totals(t) => Some((e.server_ms, t.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn payouts_of(&self, who: &str) -> Vec<Reply> {
        self.private
            .iter()
            .filter(|(u, r)| *u == user(who) && matches!(r, Reply::Payout { .. }))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Every public event's seq is its position + 1: starts at 1, no gap, no repeat.
    pub fn assert_seq_gap_free(&self) {
        for (i, ev) in self.events.iter().enumerate() {
            assert_eq!(ev.seq, i as u64 + 1, "event {i}: {ev:?}");
        }
        assert_eq!(self.table.last_seq(), self.events.len() as u64);
    }
}

pub(super) fn payout_total(r: &Reply) -> u64 {
    match r {
        Reply::Payout { total, .. } => *total,
        other => panic!("not a payout: {other:?}"),
    }
}
