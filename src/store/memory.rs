//! `MemoryStore`: an [`EventStore`] that keeps records in memory only, for tests of other
//! modules (a table actor, a restart by replay). Nothing survives the process.

use super::{EventStore, Fence, StoreError, StoreFuture};
use crate::ids::TableId;
use crate::table::Record;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<HashMap<TableId, Vec<Record>>>,
    failing: AtomicBool,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record appended to `table` so far.
    pub fn records(&self, table: &TableId) -> Vec<Record> {
        self.tables().get(table).cloned().unwrap_or_default()
    }

    /// While `on`, every append fails as a full disk would, and appends nothing.
    pub fn fail_appends(&self, on: bool) {
        self.failing.store(on, Ordering::Relaxed);
    }

    fn tables(&self) -> MutexGuard<'_, HashMap<TableId, Vec<Record>>> {
        // No code holding the lock can panic half-way through a change.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EventStore for MemoryStore {
    fn load<'a>(&'a self, table: &'a TableId) -> StoreFuture<'a, Vec<Record>> {
        Box::pin(async move { Ok(self.records(table)) })
    }

    fn append<'a>(
        &'a self,
        table: &'a TableId,
        _fence: Fence,
        records: Vec<Record>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if self.failing.load(Ordering::Relaxed) {
                return Err(StoreError::Write {
                    path: format!("memory:{table}").into(),
                    source: io::Error::from(io::ErrorKind::StorageFull),
                });
            }
            self.tables()
                .entry(table.clone())
                .or_default()
                .extend(records);
            Ok(())
        })
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{self, mute, table};

    #[tokio::test]
    async fn appends_load_back_in_order_per_table() {
        test_support::appends_load_back_in_order_per_table(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn a_failing_store_refuses_appends_and_keeps_nothing() {
        let store = MemoryStore::new();
        let t = table("demo");
        store.fail_appends(true);
        assert!(
            store
                .append(&t, Fence::LOCAL, vec![mute(0, 1)])
                .await
                .is_err()
        );
        store.fail_appends(false);
        store
            .append(&t, Fence::LOCAL, vec![mute(0, 2)])
            .await
            .unwrap();
        assert_eq!(store.load(&t).await.unwrap(), vec![mute(0, 2)]);
    }
}
