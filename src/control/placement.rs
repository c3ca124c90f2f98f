//! Where each table's writer runs: this node's share of the cluster's work.
//!
//! One task per node. Every quarter lease (`[cluster] lease_ms / 4`) it:
//! 1. heartbeats this node's state and load into the [`NodeRegistry`], and reads the live nodes;
//! 2. renews the lease of every table whose writer runs here (a lapsed lease that nobody
//!    claimed is reasserted; a lost one makes the writer step down, and the table's feed here
//!    follows the new owner over a link), then copies to the shared log what was spooled here
//!    while Redis was away;
//! 3. claims every table that has no owner, when this node may own it (serving, and of the
//!    table's `region` when a serving node of that region is alive), and starts its writer
//!    from the shared log: the round in progress goes on.
//!
//! While Redis is away nothing changes hands: owners keep writing (their store spools to
//! disk), edges keep their links, and the last known owners and nodes are kept in the
//! [`ClusterView`] that the API and the links read.

use super::link::{OwnerDirectory, RemoteWriter};
use super::{ControlPlane, StartMode};
use crate::auth::{TokenRole, Tokens};
use crate::cluster::choose::{self, Choice, Directed};
use crate::cluster::{
    ClusterError, Fence, LeaseClock, NodeInfo, NodeLoad, NodeRegistry, NodeState, Renewal,
    TableOwnership,
};
use crate::ids::{NodeId, TableId, UserId};
use crate::protocol::TableConfig;
use crate::store::EventStore;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

/// What this node knows of the cluster, as of its last tick.
pub struct ClusterView {
    pub me: NodeId,
    pub region: String,
    pub public_url: String,
    /// False for a node alone (no Redis): it owns every table.
    pub clustered: bool,
    inner: Mutex<ViewInner>,
    tokens: Arc<Tokens>,
    /// What this node pulls from other nodes, for its heartbeat (set once media runs).
    relay_list: OnceLock<RelayList>,
}

/// Lists the cameras this node pulls from other nodes, and the origins it cannot reach.
pub type RelayList = Box<dyn Fn() -> Pulls + Send + Sync>;

/// This node's pulls of other nodes' cameras, as its heartbeat and `/readyz` report them.
#[derive(Debug, Default)]
pub struct Pulls {
    pub relays: Vec<crate::cluster::RelayRef>,
    /// The tables whose origin no pull of this node reaches now.
    pub unreachable: Vec<crate::cluster::UnreachableOrigin>,
}

#[derive(Debug, Default)]
struct ViewInner {
    nodes: Vec<NodeInfo>,
    owners: BTreeMap<TableId, NodeId>,
    /// Why the cluster's coordination is degraded (Redis away), if it is.
    degraded: Option<String>,
    state: Option<NodeState>,
    /// Players this node sent to each node since that node's last heartbeat.
    directed: Directed,
}

impl ClusterView {
    pub fn new(
        me: NodeId,
        region: String,
        public_url: String,
        clustered: bool,
        tokens: Arc<Tokens>,
    ) -> Arc<ClusterView> {
        Arc::new(ClusterView {
            me,
            region,
            public_url,
            clustered,
            inner: Mutex::new(ViewInner::default()),
            tokens,
            relay_list: OnceLock::new(),
        })
    }

    /// Sets where the heartbeat reads this node's relays from.
    pub fn set_relay_list(&self, list: RelayList) {
        let _ = self.relay_list.set(list);
    }

    /// The cameras this node pulls from other nodes, and the origins it cannot reach.
    pub fn pulls(&self) -> Pulls {
        self.relay_list.get().map(|f| f()).unwrap_or_default()
    }

    /// The id of the node whose public URL is `url`.
    pub fn node_at(&self, url: &str) -> Option<NodeId> {
        let inner = self.lock();
        inner
            .nodes
            .iter()
            .find(|n| n.public_url == url)
            .map(|n| n.id.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ViewInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node that owns the table, as last seen (this node, alone).
    pub fn owner(&self, table: &TableId) -> Option<NodeId> {
        if !self.clustered {
            return Some(self.me.clone());
        }
        self.lock().owners.get(table).cloned()
    }

    /// The base URL of the node that owns the table, if it is another node.
    pub fn owner_elsewhere(&self, table: &TableId) -> Option<String> {
        let inner = self.lock();
        let owner = inner.owners.get(table)?;
        if *owner == self.me {
            return None;
        }
        inner
            .nodes
            .iter()
            .find(|n| n.id == *owner)
            .map(|n| n.public_url.clone())
    }

    /// The serving nodes a player of `table` in `region` should use, best first, leaving out `exclude`
    /// (see [`crate::cluster::choose`]). Counts a player sent to the first.
    pub fn join_order(&self, table: &TableId, region: &str, exclude: &[NodeId]) -> Vec<Choice> {
        let mut inner = self.lock();
        let ViewInner {
            nodes, directed, ..
        } = &mut *inner;
        choose::join_order(nodes, table, region, exclude, directed)
    }

    /// Every live node, as last seen.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.lock().nodes.clone()
    }

    /// Why coordination is degraded, if it is (`/readyz` says so).
    pub fn degraded(&self) -> Option<String> {
        self.lock().degraded.clone()
    }

    pub fn state(&self) -> NodeState {
        self.lock().state.unwrap_or(NodeState::Serving)
    }

    pub fn set_state(&self, state: NodeState) {
        self.lock().state = Some(state);
    }

    pub fn set_nodes(&self, nodes: Vec<NodeInfo>) {
        self.lock().nodes = nodes;
    }

    fn set_degraded(&self, reason: Option<String>) {
        let mut inner = self.lock();
        match (&inner.degraded, &reason) {
            (None, Some(r)) => {
                warn!(reason = %r, "cluster coordination degraded: serving on with what this node knows")
            }
            (Some(_), None) => info!("cluster coordination restored"),
            _ => {}
        }
        inner.degraded = reason;
    }
}

impl OwnerDirectory for ClusterView {
    fn owner_url(&self, table: &TableId) -> Option<String> {
        self.owner_elsewhere(table)
    }

    fn link_token(&self) -> Option<String> {
        let user = UserId::parse(&format!("node.{}", self.me)).ok()?;
        self.tokens
            .issue(TokenRole::Operator, "*", &user, Duration::from_secs(600))
            .ok()
    }
}

impl crate::media::relay::Origins for ClusterView {
    fn origin_url(&self, table: &TableId) -> Option<String> {
        self.owner_elsewhere(table)
    }

    fn node_credential(&self) -> Option<String> {
        self.link_token()
    }
}

/// The placement task's parts.
pub struct Placement {
    pub view: Arc<ClusterView>,
    pub plane: Arc<ControlPlane>,
    pub registry: Arc<dyn NodeRegistry>,
    pub ownership: Arc<dyn TableOwnership>,
    pub store: Arc<dyn EventStore>,
    pub tables: Vec<TableConfig>,
    pub lease: Duration,
    /// How long a node without a heartbeat stays in the registry (`[cluster] node_timeout_secs`):
    /// after watching the registry this long, this node knows every live node.
    pub node_timeout: Duration,
    /// When this node first read the registry.
    pub watching_since: OnceLock<Instant>,
    /// This node's load, for its heartbeat.
    pub load: Arc<dyn Fn() -> NodeLoad + Send + Sync>,
    /// The lease clock of each table whose writer runs here.
    pub leases: Mutex<BTreeMap<TableId, Arc<LeaseClock>>>,
    /// For asking the other nodes whether they reach Redis.
    pub http: reqwest::Client,
}

impl Placement {
    /// Serves every table's players here (each through a link until this node owns it), then
    /// ticks until `stopping`. When `drain` turns true, the node stops claiming, hands every
    /// table it owns to other nodes, and says so on `drained`.
    pub async fn run(
        self,
        mut stopping: watch::Receiver<bool>,
        mut drain: watch::Receiver<bool>,
        drained: watch::Sender<bool>,
    ) {
        for config in &self.tables {
            let route = RemoteWriter::spawn(
                config.id.clone(),
                self.view.clone(),
                self.plane.table_metrics(&config.id),
            );
            self.plane.serve_table(config.clone(), route);
        }
        let mut tick = tokio::time::interval(self.lease / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.tick().await,
                changed = drain.changed(), if !*drained.borrow() => {
                    if changed.is_ok() && *drain.borrow() {
                        info!("draining: handing this node's tables to other nodes");
                        self.view.set_state(NodeState::Draining);
                        self.tick().await;
                        self.release_all().await;
                        drained.send_replace(true);
                    }
                }
                changed = stopping.changed() => {
                    if changed.is_err() || *stopping.borrow() {
                        break;
                    }
                }
            }
        }
    }

    fn me(&self) -> NodeInfo {
        let pulls = self.view.pulls();
        NodeInfo {
            id: self.view.me.clone(),
            region: self.view.region.clone(),
            public_url: self.view.public_url.clone(),
            state: self.view.state(),
            load: (self.load)(),
            tables: self
                .plane
                .local_writers()
                .into_iter()
                .map(|(t, _)| t)
                .collect(),
            heartbeat_ms: super::server_ms(),
            relays: pulls.relays,
            unreachable_origins: pulls.unreachable,
        }
    }

    async fn tick(&self) {
        let me = self.me();
        let mut outage: Option<String> = None;
        if let Err(e) = self.registry.heartbeat(&me).await {
            outage = Some(e.to_string());
        }
        match self.registry.nodes().await {
            Ok(nodes) => {
                self.watching_since.get_or_init(Instant::now);
                self.view.lock().nodes = nodes;
            }
            Err(e) => outage = Some(e.to_string()),
        }
        for config in &self.tables {
            if let Err(e) = self.place(config).await {
                outage = Some(e.to_string());
            }
        }
        self.view.set_degraded(outage);
    }

    /// One table's turn: renew, step down, or claim.
    async fn place(&self, config: &TableConfig) -> Result<(), ClusterError> {
        let table = &config.id;
        let me = &self.view.me;
        if let Some(fence) = self.plane.local_writer(table) {
            let sent = Instant::now();
            let renewal = match self.ownership.renew(table, me, fence).await {
                Ok(renewal) => renewal,
                Err(e) => {
                    // Nobody can claim while every other node is cut off from Redis too:
                    // acknowledgements may go on. Otherwise they wait, and the writer steps
                    // down when the lease cannot be confirmed (see `LeaseClock`).
                    if self.peers_cut_off_too().await {
                        self.lease_clock(table).extend_to(sent + self.lease);
                    }
                    return Err(e);
                }
            };
            match renewal {
                Renewal::Held => {}
                Renewal::Reasserted => {
                    info!(table_id = %table, %fence, "lease reasserted (it had lapsed, or Redis lost it); nobody had claimed the table")
                }
                Renewal::Lost => {
                    warn!(table_id = %table, %fence, "lease lost to another node: this node's writer steps down; its players follow the new owner");
                    drop(self.step_down(table));
                    return Ok(());
                }
            }
            self.view.lock().owners.insert(table.clone(), me.clone());
            match self.store.backfill(table, fence).await {
                Ok(0) => {}
                Ok(n) => {
                    info!(table_id = %table, records = n, "copied to the shared log what was written while Redis was away")
                }
                Err(e) => debug!(table_id = %table, error = %e, "backfill waits"),
            }
            return Ok(());
        }
        if self.plane.has_stopped_writer(table) {
            // The writer stopped by itself (its append was fenced): follow the new owner.
            drop(self.step_down(table));
        }
        let owner = self.ownership.owner(table).await?;
        match owner {
            Some(owner) if owner.node == *me => {
                // A lease of this node's earlier life (a restart within the lease): adopt it;
                // nothing is acknowledged until its first renewal.
                self.take(config, owner.fence, Instant::now()).await;
            }
            Some(owner) => {
                self.view.lock().owners.insert(table.clone(), owner.node);
            }
            None => {
                self.view.lock().owners.remove(table);
                if self.may_own(config)
                    && let Some(fence) = self.ownership.claim(table, me).await?
                {
                    self.take(config, fence, Instant::now()).await;
                }
            }
        }
        Ok(())
    }

    /// Starts the table's writer here with `fence`, from the shared log; what it keeps only on
    /// this node's disk is acknowledged after `valid_until` only once an outage of Redis for
    /// every node is confirmed (see `LeaseClock`).
    async fn take(&self, config: &TableConfig, fence: Fence, valid_until: Instant) {
        let table = &config.id;
        let clock = Arc::new(LeaseClock::until(valid_until));
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(table.clone(), clock.clone());
        match self
            .plane
            .start_writer(
                config,
                self.store.clone(),
                fence,
                clock,
                StartMode::Takeover,
            )
            .await
        {
            Ok(_) => {
                info!(table_id = %table, %fence, "this node owns the table now");
                self.view
                    .lock()
                    .owners
                    .insert(table.clone(), self.view.me.clone());
            }
            Err(e) => {
                error!(table_id = %table, %fence, error = %e, "cannot take the table; giving the lease back");
                let _ = self.ownership.release(table, &self.view.me, fence).await;
            }
        }
    }

    /// Points the table here at its next owner and stops the writer that ran here; returns
    /// its task.
    fn step_down(&self, table: &TableId) -> Option<tokio::task::JoinHandle<()>> {
        let route = RemoteWriter::spawn(
            table.clone(),
            self.view.clone(),
            self.plane.table_metrics(table),
        );
        self.view.lock().owners.remove(table);
        self.plane.route(table, route)
    }

    /// The lease clock of a table whose writer runs here.
    fn lease_clock(&self, table: &TableId) -> Arc<LeaseClock> {
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(table.clone())
            .or_insert_with(|| Arc::new(LeaseClock::until(Instant::now())))
            .clone()
    }

    /// True when every other live node says it cannot reach Redis either (its `/readyz` says
    /// `degraded`): then nobody can claim a table, and owners may go on acknowledging. A node
    /// that does not answer counts as one that might reach Redis.
    async fn peers_cut_off_too(&self) -> bool {
        let peers: Vec<String> = self
            .view
            .nodes()
            .into_iter()
            .filter(|n| n.id != self.view.me)
            .map(|n| n.public_url)
            .collect();
        let checks = peers.iter().map(|url| async move {
            let url = format!("{}/readyz", url.trim_end_matches('/'));
            let answer = match self.http.get(&url).send().await {
                Ok(r) => r.json::<serde_json::Value>().await.ok(),
                Err(_) => None,
            };
            answer.is_some_and(|a| a["status"] == "degraded")
        });
        futures_util::future::join_all(checks)
            .await
            .into_iter()
            .all(|cut_off| cut_off)
    }

    /// Whether this node may claim the table now: it is serving, and of the table's region
    /// when a serving node of that region is alive.
    fn may_own(&self, config: &TableConfig) -> bool {
        if self.view.state() != NodeState::Serving {
            return false;
        }
        if config.region.is_empty() || config.region == self.view.region {
            return true;
        }
        // Another region's node claims only once it has watched the registry for a node
        // timeout: a node of the table's region that is alive has heartbeated by then, so a node
        // that starts first does not take a table its region's nodes should own.
        let knows_every_node = self
            .watching_since
            .get()
            .is_some_and(|since| since.elapsed() >= self.node_timeout);
        if !knows_every_node {
            return false;
        }
        let inner = self.view.lock();
        !inner
            .nodes
            .iter()
            .any(|n| n.state == NodeState::Serving && n.region == config.region)
    }

    /// Hands every table owned here to other nodes: each writer finishes its turn and stops,
    /// its lease is released, and the table's feed here follows the next owner.
    pub async fn release_all(&self) {
        for (table, fence) in self.plane.local_writers() {
            // The last turn must be durable before anyone else may load the log.
            if let Some(task) = self.step_down(&table)
                && tokio::time::timeout(Duration::from_secs(5), task)
                    .await
                    .is_err()
            {
                warn!(table_id = %table, "the table's writer did not stop within 5 s; its lease lapses by itself");
                continue;
            }
            if let Err(e) = self.ownership.release(&table, &self.view.me, fence).await {
                warn!(table_id = %table, error = %e, "cannot release the lease; it lapses by itself");
            }
        }
    }
}
