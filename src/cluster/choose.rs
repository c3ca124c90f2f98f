//! Which node a player should use (`GET /api/v1/tables/{table}/join`): the least-loaded serving
//! node of the player's region, else the least-loaded serving node anywhere.
//!
//! A node whose heartbeat says it cannot reach the table's origin (its pull of the table's video
//! fails, `media::relay::Unreachable`) goes last, after every node that can, whatever its region
//! and load: it is kept in the list, not left out, so that a player still has somewhere to go
//! when no node can (the origin itself never carries the mark).
//!
//! Load is the heartbeat's `players` (control connections), plus the players this node has sent
//! to that node since its last heartbeat: heartbeats come every quarter lease, and a join storm
//! answered from one stale figure would send everyone to the same node. CPU breaks ties, then
//! the node id, so the order is stable.

use super::{NodeInfo, NodeState};
use crate::ids::{NodeId, TableId};
use std::collections::HashMap;

/// Players sent to each node since its heartbeat at `heartbeat_ms`.
#[derive(Debug, Default)]
pub struct Directed {
    sent: HashMap<NodeId, (u64, u64)>,
}

impl Directed {
    /// Players sent to `node` since its heartbeat of `heartbeat_ms` (a newer heartbeat counts
    /// them itself).
    fn since(&self, node: &NodeInfo) -> u64 {
        match self.sent.get(&node.id) {
            Some(&(at, n)) if at == node.heartbeat_ms => n,
            _ => 0,
        }
    }

    fn record(&mut self, node: &NodeInfo) {
        let n = self.since(node) + 1;
        self.sent.insert(node.id.clone(), (node.heartbeat_ms, n));
        // Forget nodes that are gone, so the map stays as small as the cluster.
        if self.sent.len() > 1024 {
            self.sent.clear();
        }
    }
}

/// One node in a join answer, and why it is where it is in the order.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub node: NodeInfo,
    /// Its load as the order weighed it: heartbeat players plus players sent since.
    pub players: u64,
    /// In the region asked for.
    pub in_region: bool,
    /// False when its heartbeat says it cannot reach the table's origin.
    pub reaches_origin: bool,
}

/// Every serving node not in `exclude`, best first: the region's nodes by load, then the
/// others by load, then the nodes that cannot reach `table`'s origin. The first is counted in
/// `directed` as a player sent there.
pub fn join_order(
    nodes: &[NodeInfo],
    table: &TableId,
    region: &str,
    exclude: &[NodeId],
    directed: &mut Directed,
) -> Vec<Choice> {
    let mut order: Vec<Choice> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Serving && !exclude.contains(&n.id))
        .map(|n| Choice {
            players: n.load.players + directed.since(n),
            in_region: n.region == region,
            reaches_origin: !n.cannot_reach_origin_of(table),
            node: n.clone(),
        })
        .collect();
    order.sort_by(|a, b| {
        b.reaches_origin
            .cmp(&a.reaches_origin)
            .then(b.in_region.cmp(&a.in_region))
            .then(a.players.cmp(&b.players))
            .then(a.node.load.cpu.total_cmp(&b.node.load.cpu))
            .then(a.node.id.cmp(&b.node.id))
    });
    if let Some(first) = order.first() {
        directed.record(&first.node);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeLoad;

    fn node(id: &str, region: &str, players: u64, state: NodeState) -> NodeInfo {
        NodeInfo {
            id: NodeId::parse(id).unwrap(),
            region: region.into(),
            public_url: format!("https://{id}.example:8443"),
            state,
            load: NodeLoad {
                players,
                cpu: 0.1,
                bitrate_bps: 0,
            },
            tables: vec![],
            heartbeat_ms: 1_000,
            relays: Default::default(),
            unreachable_origins: Default::default(),
        }
    }

    fn demo() -> TableId {
        TableId::parse("demo").unwrap()
    }

    fn ids(order: &[Choice]) -> Vec<&str> {
        order.iter().map(|c| c.node.id.as_str()).collect()
    }

    #[test]
    fn the_regions_least_loaded_serving_node_comes_first_then_the_rest_by_load() {
        let nodes = [
            node("eu-1", "eu", 10, NodeState::Serving),
            node("us-1", "us", 50, NodeState::Serving),
            node("us-2", "us", 20, NodeState::Serving),
            node("us-3", "us", 0, NodeState::Draining),
            node("ap-1", "ap", 5, NodeState::Serving),
        ];
        let mut directed = Directed::default();
        let order = join_order(&nodes, &demo(), "us", &[], &mut directed);
        assert_eq!(ids(&order), ["us-2", "us-1", "ap-1", "eu-1"]);
        assert!(order[0].in_region && !order[2].in_region);
        // A region with no serving node: the least-loaded anywhere.
        let order = join_order(&nodes, &demo(), "sa", &[], &mut directed);
        assert_eq!(ids(&order), ["ap-1", "eu-1", "us-2", "us-1"]);
    }

    #[test]
    fn excluded_nodes_are_left_out_and_nothing_serving_gives_an_empty_answer() {
        let nodes = [
            node("a", "", 0, NodeState::Serving),
            node("b", "", 9, NodeState::Serving),
        ];
        let mut directed = Directed::default();
        let a = NodeId::parse("a").unwrap();
        assert_eq!(
            ids(&join_order(
                &nodes,
                &demo(),
                "",
                std::slice::from_ref(&a),
                &mut directed
            )),
            ["b"]
        );
        let b = NodeId::parse("b").unwrap();
        assert!(join_order(&nodes, &demo(), "", &[a, b], &mut directed).is_empty());
        assert!(join_order(&[], &demo(), "", &[], &mut directed).is_empty());
    }

    #[test]
    fn nodes_that_cannot_reach_the_tables_origin_go_last_for_that_table_only() {
        let mut nodes = vec![
            node("us-1", "us", 0, NodeState::Serving),
            node("us-2", "us", 50, NodeState::Serving),
            node("eu-1", "eu", 90, NodeState::Serving),
        ];
        nodes[0]
            .unreachable_origins
            .push(crate::cluster::UnreachableOrigin {
                table: demo(),
                origin: Some(NodeId::parse("us-2").unwrap()),
                since_ms: 1,
                error: "did not connect".into(),
            });
        let mut directed = Directed::default();
        let order = join_order(&nodes, &demo(), "us", &[], &mut directed);
        assert_eq!(ids(&order), ["us-2", "eu-1", "us-1"]);
        assert!(!order[2].reaches_origin && order[0].reaches_origin);
        // Another table: us-1 is first again.
        let other = TableId::parse("other").unwrap();
        let order = join_order(&nodes, &other, "us", &[], &mut directed);
        assert_eq!(ids(&order), ["us-1", "us-2", "eu-1"]);
    }

    #[test]
    fn a_join_storm_between_heartbeats_is_spread_over_the_nodes() {
        let mut nodes = vec![
            node("a", "", 100, NodeState::Serving),
            node("b", "", 100, NodeState::Serving),
            node("c", "", 130, NodeState::Serving),
        ];
        let mut directed = Directed::default();
        let mut sent: HashMap<String, u64> = HashMap::new();
        for _ in 0..90 {
            let first = join_order(&nodes, &demo(), "", &[], &mut directed)[0]
                .node
                .id
                .to_string();
            *sent.entry(first).or_default() += 1;
        }
        // a and b take 30 each to reach c's 130, then the three share the rest.
        assert_eq!(sent["a"], 40);
        assert_eq!(sent["b"], 40);
        assert_eq!(sent["c"], 10);
        // A newer heartbeat carries its own count: what was sent before it no longer adds.
        nodes[0].heartbeat_ms = 2_000;
        nodes[0].load.players = 150;
        let order = join_order(&nodes, &demo(), "", &[], &mut directed);
        assert_eq!(ids(&order), ["b", "c", "a"]);
        assert_eq!(order[2].players, 150);
    }
}
