//! Sequenced output: the outbox the table fills and the caller drains with `poll_output`.
//!
//! Invariant: every public event gets `seq = last_seq + 1`, assigned here and nowhere else, so
//! a table's events are numbered 1, 2, 3 … with no gap and no repeat. `last_seq` is restored
//! from the log on restart, so the numbering continues across restarts.

use super::record::Record;
use crate::ids::UserId;
use crate::protocol::{PublicEvent, Reply, SequencedEvent, ServerTime};
use std::collections::VecDeque;

/// One piece of work for the caller, in the order it must be done.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Output {
    /// Append to the table's log. Not an event for anyone to see.
    Record(Record),
    /// Append to the log as `Record::Event`, then send to every watcher of the table.
    Public(SequencedEvent),
    /// Send to this player's connections only.
    Private { user: UserId, reply: Reply },
    /// Nothing more to do: call `handle_timeout` at this time (`None`: only on new input).
    Timeout(Option<ServerTime>),
}

impl Output {
    /// What this output adds to the log, if anything: `Record` and `Public` outputs are logged,
    /// `Private` replies and `Timeout` are not (payouts are recomputed from the log).
    pub fn record(&self) -> Option<Record> {
        match self {
            Output::Record(r) => Some(r.clone()),
            Output::Public(ev) => Some(Record::Event(ev.clone())),
            Output::Private { .. } | Output::Timeout(_) => None,
        }
    }
}

/// The queue behind `poll_output`, and the table's seq counter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outbox {
    last_seq: u64,
    queue: VecDeque<Output>,
}

impl Outbox {
    /// Numbers `event` and queues it; returns its seq.
    pub fn publish(&mut self, at: ServerTime, event: PublicEvent) -> u64 {
        self.last_seq += 1;
        let seq = self.last_seq;
        self.queue.push_back(Output::Public(SequencedEvent {
            seq,
            server_ms: at,
            event,
        }));
        seq
    }

    pub fn reply(&mut self, user: UserId, reply: Reply) {
        self.queue.push_back(Output::Private { user, reply });
    }

    pub fn record(&mut self, record: Record) {
        self.queue.push_back(Output::Record(record));
    }

    pub fn pop(&mut self) -> Option<Output> {
        self.queue.pop_front()
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Replay only: the log's event `seq` has been checked to be `last_seq + 1`.
    pub fn replayed(&mut self, seq: u64) {
        self.last_seq = seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RoundId;

    #[test]
    fn seq_counts_up_by_one_from_one() {
        let mut o = Outbox::default();
        for expect in 1..=5 {
            let seq = o.publish(
                ServerTime(expect),
                PublicEvent::RoundSettled {
                    round: RoundId(expect),
                },
            );
            assert_eq!(seq, expect);
        }
        let seqs: Vec<u64> = std::iter::from_fn(|| o.pop())
            .filter_map(|out| match out {
                Output::Public(ev) => Some(ev.seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(o.last_seq(), 5);
    }
}
