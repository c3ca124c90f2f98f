//! The embedded default: a node alone, no Redis. It owns every table with [`Fence::LOCAL`]
//! (its own store needs no lease), and the node list is just itself.

use super::{
    ClusterError, ClusterFuture, Fence, NodeInfo, NodeRegistry, Owner, Renewal, TableOwnership,
};
use crate::ids::{NodeId, TableId};
use std::sync::Mutex;

/// A cluster of one node.
pub struct LocalCluster {
    me: NodeId,
    /// What this node said of itself last (join or heartbeat).
    last: Mutex<Option<NodeInfo>>,
}

impl LocalCluster {
    /// The cluster of the node `me`.
    pub fn new(me: NodeId) -> Self {
        Self {
            me,
            last: Mutex::new(None),
        }
    }

    fn remember(&self, me: &NodeInfo) {
        // A plain value: consistent whatever panicked while holding the lock.
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(me.clone());
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> ClusterFuture<'a, T> {
    Box::pin(std::future::ready(Ok::<T, ClusterError>(value)))
}

impl NodeRegistry for LocalCluster {
    /// Nothing to check alone; remembers `me` for [`NodeRegistry::nodes`].
    fn join<'a>(&'a self, me: &'a NodeInfo, _fingerprint: &'a str) -> ClusterFuture<'a, ()> {
        self.remember(me);
        ready(())
    }

    fn heartbeat<'a>(&'a self, me: &'a NodeInfo) -> ClusterFuture<'a, ()> {
        self.remember(me);
        ready(())
    }

    /// This node as its last heartbeat (or join) described it; empty before either.
    fn nodes(&self) -> ClusterFuture<'_, Vec<NodeInfo>> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        ready(last.into_iter().collect())
    }

    fn leave<'a>(&'a self, _me: &'a NodeId) -> ClusterFuture<'a, ()> {
        ready(())
    }
}

impl TableOwnership for LocalCluster {
    /// Always this node, with [`Fence::LOCAL`].
    fn owner<'a>(&'a self, _table: &'a TableId) -> ClusterFuture<'a, Option<Owner>> {
        ready(Some(Owner {
            node: self.me.clone(),
            fence: Fence::LOCAL,
        }))
    }

    fn claim<'a>(
        &'a self,
        _table: &'a TableId,
        _me: &'a NodeId,
    ) -> ClusterFuture<'a, Option<Fence>> {
        ready(Some(Fence::LOCAL))
    }

    fn renew<'a>(
        &'a self,
        _table: &'a TableId,
        _me: &'a NodeId,
        _fence: Fence,
    ) -> ClusterFuture<'a, Renewal> {
        ready(Renewal::Held)
    }

    fn release<'a>(
        &'a self,
        _table: &'a TableId,
        _me: &'a NodeId,
        _fence: Fence,
    ) -> ClusterFuture<'a, ()> {
        ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{NodeLoad, NodeState};

    fn block_on<T>(f: ClusterFuture<'_, T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
            .unwrap()
    }

    #[test]
    fn a_node_alone_owns_every_table_and_lists_itself() {
        let me = NodeId::parse("solo").unwrap();
        let table = TableId::parse("demo").unwrap();
        let cluster = LocalCluster::new(me.clone());
        assert!(block_on(cluster.nodes()).is_empty());
        let info = NodeInfo {
            id: me.clone(),
            region: "eu".into(),
            public_url: "http://127.0.0.1:8080".into(),
            state: NodeState::Serving,
            load: NodeLoad::default(),
            tables: vec![table.clone()],
            heartbeat_ms: 5,
            relays: Default::default(),
            unreachable_origins: Default::default(),
        };
        block_on(cluster.heartbeat(&info));
        assert_eq!(block_on(cluster.nodes()), vec![info]);
        let owner = block_on(cluster.owner(&table)).unwrap();
        assert_eq!((owner.node, owner.fence), (me.clone(), Fence::LOCAL));
        assert_eq!(block_on(cluster.claim(&table, &me)), Some(Fence::LOCAL));
        assert_eq!(
            block_on(cluster.renew(&table, &me, Fence::LOCAL)),
            Renewal::Held
        );
        block_on(cluster.release(&table, &me, Fence::LOCAL));
        block_on(cluster.leave(&me));
    }
}
