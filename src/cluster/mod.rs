//! Several nodes as one system: who is alive, who owns each table, and how to reach them.
//!
//! ```text
//!            NodeRegistry                TableOwnership
//!  node ──heartbeat──▶ nodes ◀──list── any node        owner ──claim/renew──▶ lease{fence}
//!                                                          │
//!                                                          ▼ every log append carries the fence
//!                                                      EventStore (store/redis.rs refuses a
//!                                                      stale fence in the same script)
//! ```
//! - [`NodeRegistry`]: heartbeats with each node's state and load; the live nodes remove
//!   entries older than `[cluster] node_timeout_secs`.
//! - [`TableOwnership`]: one owner per table through a lease (`[cluster] lease_ms`) that carries
//!   a [`Fence`], a number that only increases per table. The owner runs the table's single
//!   writer; a node that lost its lease finds its next append refused and steps down.
//! - [`LocalCluster`] (`local.rs`): the embedded default (one node, no Redis): this node owns
//!   every table with [`Fence::LOCAL`] and is the only node listed.
//! - [`RedisCluster`] (`redis.rs`, its Lua in `redis/scripts.rs`): the cluster, over Redis.
//!   Every key name is in [`keys`]. Times are the Redis server's, so node clocks do not matter.
//!   Every connection error or timeout is [`ClusterError::Unreachable`] within about a second.
//! - `embargo.rs`: after this node saw Redis fail or restart (its `run_id` changed), `claim`
//!   answers `None` for two leases, so that owners reassert their leases
//!   ([`Renewal::Reasserted`]) before anyone else may take a table. `renew` never waits.
//! - [`cpu`]: this process's CPU use between heartbeats, for [`NodeLoad::cpu`].
//!
//! Lease life of one table, as the owner sees it through [`TableOwnership`]:
//!
//! ```text
//!   claim ──Some(fence)──▶ Held ──renew──▶ Held ...
//!     │ None: held by another,       │ lease lapsed / Redis lost it, nobody claimed: Reasserted
//!     │ or the claim embargo          │ another node claimed (higher fence): Lost → step down
//!     ▼                               ▼ release: DEL if still ours → others may claim at once
//! ```
//!
//! Only `app.rs` names an implementation.

pub mod choose;
pub mod cpu;
mod embargo;
pub mod keys;
mod local;
mod redis;

pub use local::LocalCluster;
pub use redis::RedisCluster;

use crate::ids::{NodeId, TableId};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

/// A fencing token: strictly increasing per table, across owners. A write carrying a fence
/// lower than the table's current one comes from an owner that has been replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fence(pub u64);

impl Fence {
    /// The fence of a node alone: its own store, no lease.
    pub const LOCAL: Fence = Fence(0);
}

impl std::fmt::Display for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Whether a node takes new players and tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Serving,
    /// Handing its tables over and moving its players; it exits soon.
    Draining,
}

/// What a node reports of its load with each heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Control connections (data channels and WebSockets) on this node.
    pub players: u64,
    /// Process CPU over the last heartbeat interval, in cores (1.0 = one core busy).
    pub cpu: f64,
    /// Media sent, bits per second, over the last heartbeat interval.
    pub bitrate_bps: u64,
}

/// One node as the registry knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    pub region: String,
    /// Base URL of its HTTP listener, for clients and other nodes.
    pub public_url: String,
    pub state: NodeState,
    pub load: NodeLoad,
    /// Tables whose lease it holds.
    pub tables: Vec<TableId>,
    /// Server time (ms since the Unix epoch) of this heartbeat.
    pub heartbeat_ms: u64,
    /// The cameras it pulls from other nodes (it is their edge).
    #[serde(default)]
    pub relays: Vec<RelayRef>,
    /// The tables whose origin it cannot pull from (see `media::relay::Unreachable`): `join`
    /// sends their players to other nodes first.
    #[serde(default)]
    pub unreachable_origins: Vec<UnreachableOrigin>,
}

impl NodeInfo {
    /// Whether the node says it cannot reach the origin of `table`.
    pub fn cannot_reach_origin_of(&self, table: &TableId) -> bool {
        self.unreachable_origins.iter().any(|u| u.table == *table)
    }
}

/// A table whose origin a node cannot pull the video from, as its heartbeat and `/readyz` say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreachableOrigin {
    pub table: TableId,
    /// The origin node (`None` if its URL matches no live node).
    pub origin: Option<NodeId>,
    /// Server time (ms since the Unix epoch) since when no pull from it has worked.
    pub since_ms: u64,
    /// What the last attempt ran into.
    pub error: String,
}

/// A camera a node pulls from the table's origin (the cascade), as its heartbeat says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRef {
    pub table: TableId,
    pub camera: crate::ids::CameraId,
    /// The origin node, while the pull is connected.
    pub from: Option<NodeId>,
    /// The video layers it carries (each of the camera's simulcast layers at the origin).
    #[serde(default)]
    pub layers: usize,
}

/// A table's current owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub node: NodeId,
    pub fence: Fence,
}

/// What renewing a lease found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Still ours, for another lease.
    Held,
    /// The lease had gone (it expired, or Redis lost it) and nobody had claimed the table
    /// since: it is ours again, with the same fence.
    Reasserted,
    /// Another node has claimed the table (a higher fence exists): stop writing.
    Lost,
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis cannot be reached; the node goes on with what it knows (docs/cluster.md).
    #[error(
        "Redis is unreachable: {0}; the node keeps serving what it has; check the Redis server and [cluster] redis_url"
    )]
    Unreachable(String),
    #[error(
        "this node's token keys (fingerprint {ours}) differ from the cluster's ({theirs}): every node of a cluster must use the same [auth] secret and [[auth.keys]]"
    )]
    KeysDiffer { ours: String, theirs: String },
    #[error("another live node already uses the id {0}: give each node its own [node] id")]
    DuplicateNode(NodeId),
    #[error(
        "Redis answered something tablecast did not write at {key}: {detail}; is another program using the same keys?"
    )]
    Corrupt { key: String, detail: String },
}

/// What cluster methods return: a boxed future, so the traits stay object safe.
pub type ClusterFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ClusterError>> + Send + 'a>>;

/// The live nodes and what they say of themselves.
pub trait NodeRegistry: Send + Sync + 'static {
    /// Checks that this node may join (same token keys as the cluster, id not taken by a live
    /// node), at start. The first node sets the cluster's fingerprint. An implementation may
    /// publish the first heartbeat in the same step ([`RedisCluster`] does, atomically, so
    /// two nodes starting with one id cannot both pass).
    fn join<'a>(&'a self, me: &'a NodeInfo, fingerprint: &'a str) -> ClusterFuture<'a, ()>;
    /// Publishes this node's state and load, and removes entries of nodes silent for longer
    /// than the node timeout.
    fn heartbeat<'a>(&'a self, me: &'a NodeInfo) -> ClusterFuture<'a, ()>;
    /// Every node whose last heartbeat is within the node timeout.
    fn nodes(&self) -> ClusterFuture<'_, Vec<NodeInfo>>;
    /// Removes this node's entry (at the end of a drain or a clean stop).
    fn leave<'a>(&'a self, me: &'a NodeId) -> ClusterFuture<'a, ()>;
}

/// One owner per table, through fenced leases.
pub trait TableOwnership: Send + Sync + 'static {
    /// The table's owner, if its lease is live.
    fn owner<'a>(&'a self, table: &'a TableId) -> ClusterFuture<'a, Option<Owner>>;
    /// Takes the table if nobody holds it: a new, higher fence. `None` when it is held.
    fn claim<'a>(&'a self, table: &'a TableId, me: &'a NodeId) -> ClusterFuture<'a, Option<Fence>>;
    /// Extends the lease held with `fence` (see [`Renewal`]).
    fn renew<'a>(
        &'a self,
        table: &'a TableId,
        me: &'a NodeId,
        fence: Fence,
    ) -> ClusterFuture<'a, Renewal>;
    /// Gives the table up, if still held with `fence` (a drain, a clean stop).
    fn release<'a>(
        &'a self,
        table: &'a TableId,
        me: &'a NodeId,
        fence: Fence,
    ) -> ClusterFuture<'a, ()>;
}

/// Until when no other node can claim a table this node owns, although this node cannot reach
/// Redis: every other node said it cannot reach Redis either (and a node that regains Redis
/// waits two leases before claiming). Moved by the placement task; read by the table's writer,
/// which acknowledges a batch kept only on this node's disk only while it holds, so that a node
/// cut off from Redis alone never acknowledges what a new owner would not have.
#[derive(Debug)]
pub struct LeaseClock(std::sync::atomic::AtomicU64);

impl LeaseClock {
    /// A clock valid until `until`.
    pub fn until(until: std::time::Instant) -> LeaseClock {
        LeaseClock(std::sync::atomic::AtomicU64::new(Self::ms(until)))
    }

    /// A node alone: always valid.
    pub fn forever() -> LeaseClock {
        LeaseClock(std::sync::atomic::AtomicU64::new(u64::MAX))
    }

    /// Moves the end to `until`, never back.
    pub fn extend_to(&self, until: std::time::Instant) {
        self.0
            .fetch_max(Self::ms(until), std::sync::atomic::Ordering::AcqRel);
    }

    pub fn is_valid(&self, now: std::time::Instant) -> bool {
        Self::ms(now) < self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Milliseconds since the first use in this process (a monotonic clock).
    fn ms(at: std::time::Instant) -> u64 {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let origin = *ORIGIN.get_or_init(std::time::Instant::now);
        at.saturating_duration_since(origin).as_millis() as u64 + 1
    }
}

#[cfg(test)]
mod lease_clock_tests {
    use super::LeaseClock;
    use std::time::{Duration, Instant};

    #[test]
    fn a_lease_clock_runs_out_and_only_moves_forward() {
        let now = Instant::now();
        let clock = LeaseClock::until(now + Duration::from_millis(100));
        assert!(clock.is_valid(now));
        assert!(!clock.is_valid(now + Duration::from_millis(150)));
        clock.extend_to(now + Duration::from_millis(200));
        assert!(clock.is_valid(now + Duration::from_millis(150)));
        clock.extend_to(now);
        assert!(
            clock.is_valid(now + Duration::from_millis(150)),
            "never back"
        );
        assert!(LeaseClock::forever().is_valid(now + Duration::from_secs(1 << 30)));
    }
}
