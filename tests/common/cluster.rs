//! Clusters of node processes, and scenarios written once for both kinds of cluster.
//!
//! - [`Cluster`]: one node alone ([`Cluster::single`]), or a redis-server and three nodes `a`,
//!   `b` and `c` on it ([`Cluster::three`]), each a [`NodeProcess`] a test can signal.
//! - [`cluster_scenarios!`](crate::cluster_scenarios): a scenario written once becomes two tests,
//!   one per kind of cluster.

pub use super::process::{NodeOptions, NodeProcess};
use super::redis::RedisServer;

/// The node ids of [`Cluster::three`].
pub const THREE_IDS: [&str; 3] = ["a", "b", "c"];

/// Nodes serving the same tables: one alone, or three on one redis-server.
pub struct Cluster {
    // Dropped in this order: the nodes before the Redis they use.
    nodes: Vec<NodeProcess>,
    redis: Option<RedisServer>,
}

impl Cluster {
    /// One node, `a`, alone (no Redis), serving `tables` (see [`NodeOptions::tables`]); ready.
    pub async fn single(tables: &str) -> Cluster {
        let cluster = Cluster {
            nodes: vec![NodeProcess::spawn(NodeOptions::new(THREE_IDS[0], tables))],
            redis: None,
        };
        cluster.wait_ready().await;
        cluster
    }

    /// A redis-server and three nodes `a`, `b` and `c` on it, all in the default region, all
    /// serving `tables`; ready.
    pub async fn three(tables: &str) -> Cluster {
        Self::three_with(["", "", ""], tables, |_, _| {}).await
    }

    /// [`Cluster::three`] with each node's `[node] region` (`""`: the default), and `tweak`
    /// adjusting node `i`'s config file.
    pub async fn three_with(
        regions: [&str; 3],
        tables: &str,
        tweak: impl Fn(usize, &mut toml::Table),
    ) -> Cluster {
        let redis = RedisServer::start();
        let nodes = (0..3)
            .map(|i| spawn_in(&redis, regions, tables, i, &tweak))
            .collect();
        let cluster = Cluster {
            nodes,
            redis: Some(redis),
        };
        cluster.wait_ready().await;
        cluster
    }

    /// [`Cluster::three`] with `env` added to every node's environment.
    pub async fn three_with_env(env: &[(&str, &str)]) -> Cluster {
        let redis = RedisServer::start();
        let nodes = (0..3)
            .map(|i| {
                let options = NodeOptions {
                    redis_url: redis.url(),
                    env: env
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    ..NodeOptions::new(THREE_IDS[i], "")
                };
                NodeProcess::spawn(options)
            })
            .collect();
        let cluster = Cluster {
            nodes,
            redis: Some(redis),
        };
        cluster.wait_ready().await;
        cluster
    }

    /// [`Cluster::three_with`] with no tweak, where node `a` starts alone: the other two start
    /// once it is ready and `first` has returned (given node `a`).
    pub async fn three_after_first(
        regions: [&str; 3],
        tables: &str,
        first: impl AsyncFnOnce(&NodeProcess),
    ) -> Cluster {
        let redis = RedisServer::start();
        let a = spawn_in(&redis, regions, tables, 0, &|_, _| {});
        a.wait_ready().await;
        first(&a).await;
        let mut nodes = vec![a];
        nodes.extend((1..3).map(|i| spawn_in(&redis, regions, tables, i, &|_, _| {})));
        let cluster = Cluster {
            nodes,
            redis: Some(redis),
        };
        cluster.wait_ready().await;
        cluster
    }

    pub fn nodes(&self) -> &[NodeProcess] {
        &self.nodes
    }

    pub fn node(&self, i: usize) -> &NodeProcess {
        &self.nodes[i]
    }

    /// The node the `i`th player of a scenario uses: round-robin over [`Cluster::nodes`].
    pub fn node_for(&self, i: usize) -> &NodeProcess {
        &self.nodes[i % self.nodes.len()]
    }

    /// The cluster's redis-server; `None` for a single node.
    pub fn redis(&self) -> Option<&RedisServer> {
        self.redis.as_ref()
    }

    /// The redis-server, to kill and restart it.
    pub fn redis_mut(&mut self) -> Option<&mut RedisServer> {
        self.redis.as_mut()
    }

    /// Waits until every running node is ready.
    #[track_caller]
    pub fn wait_ready(&self) -> impl Future<Output = ()> + '_ {
        let mut waits = Vec::new();
        for node in &self.nodes {
            waits.push(node.wait_ready());
        }
        async move {
            futures_util::future::join_all(waits).await;
        }
    }
}

/// Starts node `i` of three on `redis`, in `regions[i]`, with `tweak` applied to its config.
fn spawn_in(
    redis: &RedisServer,
    regions: [&str; 3],
    tables: &str,
    i: usize,
    tweak: &impl Fn(usize, &mut toml::Table),
) -> NodeProcess {
    let options = NodeOptions {
        region: regions[i].to_owned(),
        redis_url: redis.url(),
        ..NodeOptions::new(THREE_IDS[i], tables)
    };
    NodeProcess::spawn_with(options, |config| tweak(i, config))
}

/// Writes each control-plane scenario once and runs it against both kinds of cluster: a module
/// named after the scenario with two `#[tokio::test]`s, `one_node` ([`Cluster::single`]) and
/// `three_nodes` ([`Cluster::three`]), so `cargo test NAME` runs both and `cargo test
/// three_nodes` every three-node variant. The body gets the cluster, owned and mutable, under
/// the name it gives, and sees the scenario file's imports.
///
/// ```ignore
/// cluster_scenarios! {
///     /// What the scenario proves.
///     #[ignore_three_nodes = "needs the cluster control plane (issue 10)"]
///     async fn players_see_one_round(cluster, tables = DEALER_TABLE) {
///         let p = Player::ws(cluster.node_for(0), "p-0", None).await;
///         // ...
///     }
/// }
/// ```
///
/// `#[ignore_three_nodes = "why"]` marks the three-node test `#[ignore]` with that reason.
#[macro_export]
macro_rules! cluster_scenarios {
    () => {};
    (
        $(#[doc = $doc:literal])*
        $(#[ignore_three_nodes = $why:literal])?
        async fn $name:ident($cluster:ident, tables = $tables:expr) $body:block
        $($rest:tt)*
    ) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_node() {
                #[allow(unused_mut)]
                let mut $cluster = $crate::common::cluster::Cluster::single($tables).await;
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[ignore = $why])?
            async fn three_nodes() {
                #[allow(unused_mut)]
                let mut $cluster = $crate::common::cluster::Cluster::three($tables).await;
                $body
            }
        }

        $crate::cluster_scenarios! { $($rest)* }
    };
}
