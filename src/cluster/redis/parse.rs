//! Reading what Redis answers (outside input: anything may be there) and writing a node's
//! entry.

use crate::cluster::{Fence, NodeInfo, Owner};
use crate::ids::NodeId;
use tracing::warn;

/// A node's entry as stored: its JSON, with a CPU figure JSON can carry.
pub(super) fn encode(me: &NodeInfo) -> String {
    let mut me = me.clone();
    if !me.load.cpu.is_finite() {
        me.load.cpu = 0.0;
    }
    // NodeInfo has only string keys and finite numbers: serde_json cannot fail on it.
    serde_json::to_string(&me).expect("a NodeInfo serializes to JSON")
}

/// The `run_id` line of `INFO server`.
pub(super) fn run_id(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(str::trim)
        .filter(|id| !id.is_empty())
}

/// How long the server has run: the `uptime_in_seconds` line of `INFO server`.
pub(super) fn uptime(info: &str) -> Option<std::time::Duration> {
    info.lines()
        .find_map(|line| line.strip_prefix("uptime_in_seconds:"))
        .and_then(|s| s.trim().parse().ok())
        .map(std::time::Duration::from_secs)
}

/// `"<fence>:<node id>"`.
pub(super) fn parse_owner(value: &str) -> Result<Owner, String> {
    let (fence, node) = value
        .split_once(':')
        .ok_or_else(|| format!("{value:?} is not \"<fence>:<node id>\""))?;
    let fence = fence
        .parse::<u64>()
        .map_err(|e| format!("the fence of {value:?}: {e}"))?;
    let node = NodeId::parse(node).map_err(|e| e.to_string())?;
    Ok(Owner {
        node,
        fence: Fence(fence),
    })
}

/// The NODES script's `{id, score, json, ...}`; an entry that does not parse is skipped with a
/// warning (one bad entry must not hide the other nodes). Sorted by node id.
pub(super) fn parse_nodes(reply: &[String]) -> Vec<NodeInfo> {
    let mut nodes: Vec<NodeInfo> = reply
        .chunks_exact(3)
        .filter_map(|entry| {
            let [member, score, json] = entry else {
                return None;
            };
            let mut info: NodeInfo = match serde_json::from_str(json) {
                Ok(info) => info,
                Err(error) => {
                    warn!(%member, %error, "skipping a node entry that is not a tablecast NodeInfo");
                    return None;
                }
            };
            if info.id.as_str() != member {
                warn!(%member, id = %info.id, "skipping a node entry filed under another id");
                return None;
            }
            match score.parse::<f64>() {
                // Server ms since the epoch: whole and far below 2^53.
                Ok(ms) if ms.is_finite() && ms >= 0.0 => info.heartbeat_ms = ms as u64,
                _ => warn!(%member, %score, "a heartbeat time that is not a number"),
            }
            Some(info)
        })
        .collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{NodeLoad, NodeState};

    #[test]
    fn owner_values_parse_and_foreign_ones_do_not() {
        let owner = parse_owner("17:node-a").unwrap();
        assert_eq!(owner.fence, Fence(17));
        assert_eq!(owner.node.as_str(), "node-a");
        for bad in ["", "17", "x:node-a", "17:", "-1:a", "17:a b"] {
            assert!(parse_owner(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn run_id_is_read_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\ntcp_port:6379\r\n";
        assert_eq!(run_id(info), Some("abc123"));
        assert_eq!(run_id("# Server\r\nredis_version:7\r\n"), None);
        let info = "run_id:abc\r\nuptime_in_seconds:42\r\nuptime_in_days:0\r\n";
        assert_eq!(uptime(info), Some(std::time::Duration::from_secs(42)));
        assert_eq!(uptime("uptime_in_seconds:x\r\n"), None);
    }

    #[test]
    fn a_corrupt_node_entry_is_skipped_and_the_score_is_the_heartbeat() {
        let info = NodeInfo {
            id: NodeId::parse("b").unwrap(),
            region: "eu".into(),
            public_url: "http://b".into(),
            state: NodeState::Serving,
            load: NodeLoad {
                cpu: f64::NAN,
                ..NodeLoad::default()
            },
            tables: vec![],
            heartbeat_ms: 1,
            relays: Default::default(),
            unreachable_origins: Default::default(),
        };
        let reply: Vec<String> = [
            "b",
            "1700000000123",
            &encode(&info),
            "a",
            "5",
            "{not json",
            "c",
            "6",
            &encode(&info),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let nodes = parse_nodes(&reply);
        assert_eq!(nodes.len(), 1, "{nodes:?}");
        assert_eq!(nodes[0].heartbeat_ms, 1_700_000_000_123);
        assert_eq!(nodes[0].load.cpu, 0.0);
    }
}
