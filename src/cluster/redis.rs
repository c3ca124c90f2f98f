//! The cluster over Redis: [`RedisCluster`] implements [`NodeRegistry`] and [`TableOwnership`]
//! with one `ConnectionManager` and the Lua scripts of `scripts.rs` (every check-then-write is
//! one script, so it is atomic).
//!
//! - Outages are errors, never hangs: each call gives up after about a second with
//!   [`ClusterError::Unreachable`]. A call that is safe to repeat is tried once more when its
//!   connection turns out to be broken (the first call after Redis came back).
//! - Times are the Redis server's (`TIME` inside the scripts); the nodes' clocks do not matter.
//!   [`NodeInfo::heartbeat_ms`] as read by `nodes()` is the server time of the last heartbeat,
//!   whatever the node wrote there.
//! - The claim embargo ([`Embargo`]): after this node saw Redis fail, or saw it restart (its
//!   `run_id`, read with each heartbeat and before each claim, changed), `claim` answers `None`
//!   for two leases, so that the owners reassert their leases first. `renew` is never held back.

mod parse;
mod scripts;

use super::embargo::Embargo;
use super::{
    ClusterError, ClusterFuture, Fence, NodeInfo, NodeRegistry, Owner, Renewal, TableOwnership,
    keys,
};
use crate::ids::{NodeId, TableId};
use parse::{encode, parse_nodes, parse_owner, run_id};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult, ServerErrorKind};
use scripts::Scripts;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// How long one connection attempt or one reply may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// The most one call may take, reconnection and second try included, before it is
/// `Unreachable`.
const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

/// Whether a call may be sent again when its connection turned out to be broken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Repeating it changes nothing (reads, renew, release, heartbeats).
    Once,
    /// It could act twice (claim gives a new fence each time).
    Never,
}

/// Several nodes coordinated through one Redis (docs/cluster.md).
pub struct RedisCluster {
    conn: ConnectionManager,
    scripts: Scripts,
    node_timeout: Duration,
    lease: Duration,
    embargo: Mutex<Embargo>,
    /// The fingerprint this node joined with, set again by heartbeats if Redis lost it.
    fingerprint: Mutex<String>,
}

impl RedisCluster {
    /// Connects to `url` (`[cluster] redis_url`) and reads the server's `run_id`. Nodes are
    /// dead after `node_timeout` without a heartbeat; leases last `lease` without renewal.
    pub async fn connect(
        url: &str,
        node_timeout: Duration,
        lease: Duration,
    ) -> Result<Self, ClusterError> {
        // The URL may carry a password: it is never repeated in errors or logs.
        let client = redis::Client::open(url).map_err(|e| {
            ClusterError::Unreachable(format!("[cluster] redis_url is not a Redis URL ({e})"))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        let conn = match tokio::time::timeout(
            CALL_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(ClusterError::Unreachable(e.to_string())),
            Err(_) => {
                return Err(ClusterError::Unreachable(format!(
                    "no connection within {CALL_TIMEOUT:?}"
                )));
            }
        };
        let cluster = Self {
            conn,
            scripts: Scripts::new(),
            node_timeout,
            lease,
            embargo: Mutex::new(Embargo::new(lease)),
            fingerprint: Mutex::new(String::new()),
        };
        cluster.check_restart().await?;
        Ok(cluster)
    }

    fn embargo(&self) -> MutexGuard<'_, Embargo> {
        // The embargo's state stays consistent whatever panicked while holding it.
        self.embargo.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn node_timeout_ms(&self) -> u64 {
        u64::try_from(self.node_timeout.as_millis()).unwrap_or(u64::MAX)
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `op` on the connection with a deadline, once more if `retry` allows and the
    /// connection was broken, and maps its error. `key` names what it touched, for errors.
    async fn call<T, Fut>(
        &self,
        key: &str,
        retry: Retry,
        op: impl Fn(ConnectionManager) -> Fut,
    ) -> Result<T, ClusterError>
    where
        Fut: Future<Output = RedisResult<T>>,
    {
        // One deadline for the call, the second try included.
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        let mut retried = false;
        loop {
            let error = match tokio::time::timeout_at(deadline, op(self.conn.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => error,
                Err(_) => {
                    return Err(
                        self.unreachable(format!("no answer at {key} within {CALL_TIMEOUT:?}"))
                    );
                }
            };
            // A broken connection is replaced at once; a silent server is not asked twice.
            if retry == Retry::Once && !retried && error.is_io_error() && !error.is_timeout() {
                debug!(%key, %error, "the Redis connection was broken; trying once more");
                retried = true;
                continue;
            }
            return Err(self.failed(key, error));
        }
    }

    /// Maps a Redis error: what tablecast did not write is `Corrupt`, the rest `Unreachable`
    /// (which starts the claim embargo).
    fn failed(&self, key: &str, error: RedisError) -> ClusterError {
        let corrupt = matches!(
            error.kind(),
            ErrorKind::Parse
                | ErrorKind::UnexpectedReturnType
                | ErrorKind::Server(ServerErrorKind::ResponseError)
        ) || error.code() == Some("WRONGTYPE");
        if corrupt {
            ClusterError::Corrupt {
                key: key.to_owned(),
                detail: error.to_string(),
            }
        } else {
            self.unreachable(error.to_string())
        }
    }

    fn unreachable(&self, detail: String) -> ClusterError {
        if self.embargo().failed(Instant::now()) {
            warn!(%detail, embargo = ?self.lease * 2, "Redis is unreachable; claims wait until it has been back for two leases");
        } else {
            debug!(%detail, "Redis is still unreachable");
        }
        ClusterError::Unreachable(detail)
    }

    /// Reads the server's `run_id`: a new one means Redis restarted (maybe without its data),
    /// which starts the claim embargo as a failure would.
    async fn check_restart(&self) -> Result<(), ClusterError> {
        let info: String = self
            .call("INFO server", Retry::Once, |mut c| async move {
                redis::cmd("INFO").arg("server").query_async(&mut c).await
            })
            .await?;
        let Some(run_id) = run_id(&info) else {
            warn!(
                "Redis's INFO server has no run_id: a restart between two heartbeats goes unnoticed"
            );
            return Ok(());
        };
        if self
            .embargo()
            .saw_run_id(Instant::now(), run_id, parse::uptime(&info))
        {
            warn!(embargo = ?self.lease * 2, "Redis restarted (its run_id changed); claims wait so that owners reassert their leases first");
        }
        Ok(())
    }

    async fn join_inner(&self, me: &NodeInfo, fingerprint: &str) -> Result<(), ClusterError> {
        let json = encode(me);
        let node_key = keys::node(&me.id);
        let reply: Vec<String> = self
            .call(&node_key, Retry::Once, |mut c| {
                let (json, node_key) = (&json, &node_key);
                async move {
                    let mut inv = self.scripts.join.prepare_invoke();
                    inv.key(keys::fingerprint())
                        .key(node_key)
                        .key(keys::nodes())
                        .arg(fingerprint)
                        .arg(&me.public_url)
                        .arg(json)
                        .arg(self.node_timeout_ms())
                        .arg(me.id.as_str());
                    inv.invoke_async(&mut c).await
                }
            })
            .await?;
        match reply.as_slice() {
            [status, _] if status == "ok" => {
                *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) =
                    fingerprint.to_owned();
                Ok(())
            }
            [status, theirs] if status == "keys_differ" => Err(ClusterError::KeysDiffer {
                ours: fingerprint.to_owned(),
                theirs: theirs.clone(),
            }),
            [status, their_url] if status == "duplicate" => {
                warn!(node = %me.id, %their_url, "a live node already has this id");
                Err(ClusterError::DuplicateNode(me.id.clone()))
            }
            other => Err(ClusterError::Corrupt {
                key: node_key.clone(),
                detail: format!("the join script answered {other:?}"),
            }),
        }
    }

    async fn heartbeat_inner(&self, me: &NodeInfo) -> Result<(), ClusterError> {
        self.check_restart().await?;
        let json = encode(me);
        let node_key = keys::node(&me.id);
        let fingerprint = self
            .fingerprint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let _now_ms: i64 = self
            .call(&node_key, Retry::Once, |mut c| {
                let (json, node_key, fingerprint) = (&json, &node_key, &fingerprint);
                async move {
                    let mut inv = self.scripts.heartbeat.prepare_invoke();
                    inv.key(keys::nodes())
                        .key(node_key)
                        .key(keys::fingerprint())
                        .arg(me.id.as_str())
                        .arg(json)
                        .arg(self.node_timeout_ms())
                        .arg(keys::node_prefix())
                        .arg(fingerprint);
                    inv.invoke_async(&mut c).await
                }
            })
            .await?;
        Ok(())
    }

    async fn nodes_inner(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let nodes_key = keys::nodes();
        let reply: Vec<String> = self
            .call(&nodes_key, Retry::Once, |mut c| async move {
                let mut inv = self.scripts.nodes.prepare_invoke();
                inv.key(keys::nodes())
                    .arg(self.node_timeout_ms())
                    .arg(keys::node_prefix());
                inv.invoke_async(&mut c).await
            })
            .await?;
        Ok(parse_nodes(&reply))
    }

    async fn leave_inner(&self, me: &NodeId) -> Result<(), ClusterError> {
        let node_key = keys::node(me);
        self.call(&node_key, Retry::Once, |mut c| {
            let node_key = &node_key;
            async move {
                redis::pipe()
                    .atomic()
                    .zrem(keys::nodes(), me.as_str())
                    .ignore()
                    .del(node_key)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            }
        })
        .await
    }

    async fn owner_inner(&self, table: &TableId) -> Result<Option<Owner>, ClusterError> {
        let key = keys::owner(table);
        let value: Option<String> = self
            .call(&key, Retry::Once, |mut c| {
                let key = &key;
                async move { redis::cmd("GET").arg(key).query_async(&mut c).await }
            })
            .await?;
        value
            .map(|v| parse_owner(&v).map_err(|detail| ClusterError::Corrupt { key, detail }))
            .transpose()
    }

    async fn claim_inner(
        &self,
        table: &TableId,
        me: &NodeId,
    ) -> Result<Option<Fence>, ClusterError> {
        // Also opens a fresh connection if Redis came back since the last call, so that the
        // claim itself (never repeated) does not fail on a broken one.
        self.check_restart().await?;
        if self.embargo().blocks_claims(Instant::now()) {
            debug!(%table, "claim held back: Redis was away or restarted less than two leases ago");
            return Ok(None);
        }
        let owner_key = keys::owner(table);
        let fence: Option<u64> = self
            .call(&owner_key, Retry::Never, |mut c| {
                let owner_key = &owner_key;
                async move {
                    let mut inv = self.scripts.claim.prepare_invoke();
                    inv.key(owner_key)
                        .key(keys::fence(table))
                        .arg(me.as_str())
                        .arg(self.lease_ms());
                    inv.invoke_async(&mut c).await
                }
            })
            .await?;
        if let Some(fence) = fence {
            debug!(%table, fence, "claimed");
        }
        Ok(fence.map(Fence))
    }

    async fn renew_inner(
        &self,
        table: &TableId,
        me: &NodeId,
        fence: Fence,
    ) -> Result<Renewal, ClusterError> {
        let owner_key = keys::owner(table);
        let reply: String = self
            .call(&owner_key, Retry::Once, |mut c| {
                let owner_key = &owner_key;
                async move {
                    let mut inv = self.scripts.renew.prepare_invoke();
                    inv.key(owner_key)
                        .key(keys::fence(table))
                        .arg(me.as_str())
                        .arg(fence.0)
                        .arg(self.lease_ms());
                    inv.invoke_async(&mut c).await
                }
            })
            .await?;
        match reply.as_str() {
            "held" => Ok(Renewal::Held),
            "reasserted" => {
                warn!(%table, %fence, "the lease had gone and nobody claimed the table: reasserted");
                Ok(Renewal::Reasserted)
            }
            "lost" => {
                warn!(%table, %fence, "another node claimed the table: lease lost");
                Ok(Renewal::Lost)
            }
            other => Err(ClusterError::Corrupt {
                key: owner_key.clone(),
                detail: format!("the renew script answered {other:?}"),
            }),
        }
    }

    async fn release_inner(
        &self,
        table: &TableId,
        me: &NodeId,
        fence: Fence,
    ) -> Result<(), ClusterError> {
        let owner_key = keys::owner(table);
        let ours = format!("{fence}:{me}");
        let _deleted: i64 = self
            .call(&owner_key, Retry::Once, |mut c| {
                let (owner_key, ours) = (&owner_key, &ours);
                async move {
                    let mut inv = self.scripts.release.prepare_invoke();
                    inv.key(owner_key).arg(ours);
                    inv.invoke_async(&mut c).await
                }
            })
            .await?;
        Ok(())
    }
}

impl NodeRegistry for RedisCluster {
    /// Also publishes the node's first heartbeat, in the same script as the checks, so that
    /// two nodes starting with one id at once cannot both pass.
    fn join<'a>(&'a self, me: &'a NodeInfo, fingerprint: &'a str) -> ClusterFuture<'a, ()> {
        Box::pin(self.join_inner(me, fingerprint))
    }

    fn heartbeat<'a>(&'a self, me: &'a NodeInfo) -> ClusterFuture<'a, ()> {
        Box::pin(self.heartbeat_inner(me))
    }

    fn nodes(&self) -> ClusterFuture<'_, Vec<NodeInfo>> {
        Box::pin(self.nodes_inner())
    }

    fn leave<'a>(&'a self, me: &'a NodeId) -> ClusterFuture<'a, ()> {
        Box::pin(self.leave_inner(me))
    }
}

impl TableOwnership for RedisCluster {
    fn owner<'a>(&'a self, table: &'a TableId) -> ClusterFuture<'a, Option<Owner>> {
        Box::pin(self.owner_inner(table))
    }

    /// `None` also while the claim embargo lasts (see the module doc).
    fn claim<'a>(&'a self, table: &'a TableId, me: &'a NodeId) -> ClusterFuture<'a, Option<Fence>> {
        Box::pin(self.claim_inner(table, me))
    }

    fn renew<'a>(
        &'a self,
        table: &'a TableId,
        me: &'a NodeId,
        fence: Fence,
    ) -> ClusterFuture<'a, Renewal> {
        Box::pin(self.renew_inner(table, me, fence))
    }

    fn release<'a>(
        &'a self,
        table: &'a TableId,
        me: &'a NodeId,
        fence: Fence,
    ) -> ClusterFuture<'a, ()> {
        Box::pin(self.release_inner(table, me, fence))
    }
}
