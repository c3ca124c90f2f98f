//! Prometheus metrics. Workers hold `Arc<TableMetrics>` and bump atomics; nothing on the media
//! path takes a lock. `render()` writes the text exposition format for `GET /metrics`.

use crate::ids::TableId;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};

/// Node-wide counters.
#[derive(Default)]
pub struct NodeMetrics {
    /// Datagrams on a media port that matched no session (scans, stale peers, garbage).
    pub datagrams_unroutable: AtomicU64,
    /// Sessions closed because they never connected or went silent.
    pub sessions_reaped: AtomicU64,
}

/// Per-table counters and gauges.
#[derive(Default)]
pub struct TableMetrics {
    pub publishers: AtomicI64,
    pub subscribers: AtomicI64,
    pub rtp_packets_in: AtomicU64,
    pub rtp_bytes_in: AtomicU64,
    pub rtp_packets_out: AtomicU64,
    pub rtp_bytes_out: AtomicU64,
    /// NACKs received from subscribers.
    pub nacks_received: AtomicU64,
    /// NACKs sent to publishers.
    pub nacks_sent: AtomicU64,
    /// Packets resent to subscribers from the track's packet buffer.
    pub retransmissions: AtomicU64,
    /// PLI/FIR received from subscribers.
    pub plis_received: AtomicU64,
    /// PLI sent to publishers (after throttling).
    pub plis_sent: AtomicU64,
}

/// The registry.
#[derive(Default)]
pub struct Metrics {
    pub node: NodeMetrics,
    tables: Mutex<BTreeMap<TableId, Arc<TableMetrics>>>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The counters of one table, created on first use. Called at session setup, never per packet.
    pub fn table(&self, table: &TableId) -> Arc<TableMetrics> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.entry(table.clone()).or_default().clone()
    }

    /// Prometheus text exposition (stub; replaced by the full renderer).
    pub fn render(&self) -> String {
        String::new()
    }
}
