//! Every Redis key tablecast uses, in one place (docs/cluster.md lists them with their types).
//!
//! A table's keys share the hash tag `{table}`, so that one script may touch all of them on a
//! Redis Cluster too. Node keys are small and expire by themselves; table keys hold the
//! ownership lease, the fencing counter and the log.

use crate::ids::{NodeId, TableId};

/// Prefix of every key, so that one Redis can also hold other data.
pub const PREFIX: &str = "tablecast";

/// ZSET: node id → the server time (ms) of its last heartbeat. Live nodes remove members
/// older than `[cluster] node_timeout_secs`, with their [`node`] entry.
pub fn nodes() -> String {
    format!("{PREFIX}:nodes")
}

/// STRING (JSON of `NodeInfo`), expiring after `node_timeout_secs`: what a node says of itself.
pub fn node(id: &NodeId) -> String {
    format!("{}{id}", node_prefix())
}

/// What every [`node`] key starts with: the heartbeat script removes a stale member's entry
/// as `node_prefix() .. member`, since a script cannot call this function.
pub fn node_prefix() -> String {
    format!("{PREFIX}:node:")
}

/// STRING: the fingerprint of the token keys every node of the cluster must share (never the
/// secret itself). Set by the first node; a node with another fingerprint is refused at start.
pub fn fingerprint() -> String {
    format!("{PREFIX}:fingerprint")
}

/// STRING `"<fence>:<node id>"` with a PX expiry of `[cluster] lease_ms`: the table's owner.
pub fn owner(table: &TableId) -> String {
    format!("{PREFIX}:table:{{{table}}}:owner")
}

/// STRING (integer): the last fencing token given for the table. Only ever increases, and
/// never expires.
pub fn fence(table: &TableId) -> String {
    format!("{PREFIX}:table:{{{table}}}:fence")
}

/// STREAM: the table's hash-chained log. Entry `i` (from 1) has the stream id `<i>-0` (so an
/// `XADD` with an explicit id keeps the order and refuses a duplicate) and the fields `prev`,
/// `sha256`, `record` and `fence` (see [`crate::store`]'s Redis format, and docs/cluster.md).
pub fn log(table: &TableId) -> String {
    format!("{PREFIX}:table:{{{table}}}:log")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tables_keys_share_one_hash_tag() {
        let t = TableId::parse("demo").unwrap();
        for key in [owner(&t), fence(&t), log(&t)] {
            assert!(key.contains("{demo}"), "{key}");
        }
        assert_eq!(
            node(&NodeId::parse("a").unwrap()),
            "tablecast:node:a".to_owned()
        );
    }
}
