//! The composition of a node's place in a cluster: with `[cluster] redis_url` the Redis
//! registry, leases and spooled Streams log, and the placement task; without it, the node
//! alone on its file store.

use super::AppError;
use crate::auth::Tokens;
use crate::cluster::cpu::CpuMeter;
use crate::cluster::{
    ClusterError, LocalCluster, NodeInfo, NodeLoad, NodeRegistry, NodeState, RedisCluster,
    TableOwnership,
};
use crate::config::Config;
use crate::control::placement::{ClusterView, Placement};
use crate::control::{ControlPlane, table_configs};
use crate::ids::NodeId;
use crate::metrics::Metrics;
use crate::store::{EventStore, FileStore, RedisStore, SpooledStore};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A node's control plane and its place in the cluster, started.
pub(super) struct Started {
    pub control: Arc<ControlPlane>,
    pub view: Arc<ClusterView>,
    pub placement: Option<PlacementTask>,
}

/// The running placement task and how to drain or stop it.
pub(super) struct PlacementTask {
    pub drain: watch::Sender<bool>,
    pub drained: watch::Receiver<bool>,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<()>,
}

/// Starts the control plane: alone, or as a member of the cluster at `[cluster] redis_url`.
pub(super) async fn start(
    config: &Config,
    tokens: Arc<Tokens>,
    metrics: Arc<Metrics>,
    public_url: String,
) -> Result<Started, AppError> {
    let me = NodeId::parse(&config.node_id()).map_err(|e| {
        AppError::Cluster(format!(
            "{e}: set [node] id to letters, digits, '-', '_' or '.' (at most 64)"
        ))
    })?;
    let url = config.cluster.redis_url.trim();
    if url.is_empty() {
        let store: Arc<dyn EventStore> = Arc::new(FileStore::open(&config.data.dir)?);
        let control = ControlPlane::start(
            &config.tables,
            store,
            tokens.clone(),
            config.control.clone(),
            metrics.clone(),
        )
        .await?;
        let view = ClusterView::new(
            me.clone(),
            config.node.region.clone(),
            public_url,
            false,
            tokens,
        );
        let local = LocalCluster::new(me);
        let me_info = node_info(&view, &control, NodeLoad::default());
        let _ = local.heartbeat(&me_info).await;
        view.set_nodes(vec![me_info]);
        return Ok(Started {
            control,
            view,
            placement: None,
        });
    }

    let lease = Duration::from_millis(config.cluster.lease_ms);
    let node_timeout = Duration::from_secs(config.cluster.node_timeout_secs);
    let cluster = Arc::new(RedisCluster::connect(url, node_timeout, lease).await?);
    let store: Arc<dyn EventStore> = Arc::new(SpooledStore::new(
        FileStore::open(&config.data.dir)?,
        RedisStore::connect(url).await?,
    ));
    let view = ClusterView::new(
        me.clone(),
        config.node.region.clone(),
        public_url,
        true,
        tokens.clone(),
    );
    let control = ControlPlane::new(tokens.clone(), config.control.clone(), metrics.clone());
    let me_info = node_info(&view, &control, NodeLoad::default());
    cluster.join(&me_info, &tokens.fingerprint()).await?;
    tracing::info!(node = %me, region = %view.region, url = %view.public_url, "joined the cluster");

    let tables = table_configs(&config.tables, config.control.max_message_bytes)?;
    let cpu = Mutex::new((CpuMeter::new(), Instant::now(), metrics.totals().1));
    let load_metrics = metrics.clone();
    let load = Arc::new(move || {
        let mut state = cpu.lock().unwrap_or_else(|e| e.into_inner());
        let (members, bytes) = load_metrics.totals();
        let elapsed = state.1.elapsed().as_secs_f64().max(0.001);
        let bitrate_bps = (bytes.saturating_sub(state.2) as f64 * 8.0 / elapsed) as u64;
        let cpu = state.0.measure();
        state.1 = Instant::now();
        state.2 = bytes;
        NodeLoad {
            players: members,
            cpu,
            bitrate_bps,
        }
    });
    let placement = Placement {
        view: view.clone(),
        plane: control.clone(),
        registry: cluster.clone() as Arc<dyn NodeRegistry>,
        ownership: cluster.clone() as Arc<dyn TableOwnership>,
        store,
        tables,
        lease,
        node_timeout,
        watching_since: Default::default(),
        load,
        leases: Mutex::new(Default::default()),
        http: reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_millis(500))
            .build()
            .map_err(|e| AppError::Cluster(format!("cannot build an HTTP client: {e}")))?,
    };
    let (drain, drain_rx) = watch::channel(false);
    let (drained_tx, drained) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(false);
    let registry = cluster.clone();
    let task = tokio::spawn(async move {
        placement.run(stop_rx, drain_rx, drained_tx).await;
        if let Err(e) = registry.leave(&me).await {
            tracing::debug!(error = %e, "cannot remove this node's entry; it expires by itself");
        }
    });
    Ok(Started {
        control,
        view,
        placement: Some(PlacementTask {
            drain,
            drained,
            stop,
            task,
        }),
    })
}

fn node_info(view: &ClusterView, control: &ControlPlane, load: NodeLoad) -> NodeInfo {
    NodeInfo {
        id: view.me.clone(),
        region: view.region.clone(),
        public_url: view.public_url.clone(),
        state: NodeState::Serving,
        load,
        tables: control
            .local_writers()
            .into_iter()
            .map(|(t, _)| t)
            .collect(),
        heartbeat_ms: crate::control::server_ms(),
        relays: Default::default(),
        unreachable_origins: Default::default(),
    }
}

impl From<ClusterError> for AppError {
    fn from(e: ClusterError) -> Self {
        AppError::Cluster(e.to_string())
    }
}
