//! `SpooledStore`: a cluster node's [`EventStore`]. Redis holds the table's log for the whole
//! cluster; a local [`FileStore`] holds a mirror of it, record for record (the same `i`), so
//! that the node keeps accepting records when Redis is away and copies them over later.
//!
//! ```text
//!            load (Redis answers) ──▶ Shared ◀── backfill copied every spooled record
//!                                     │    │
//!   append: local (fsync), then Redis │    │ Redis unreachable (or refused the command)
//!                                     │    ▼
//!          Redis says Fenced ◀────────┘  Spooling: append goes to the local file only and
//!                 │                      returns Ok: the batch is durable on this node's disk,
//!                 ▼                      not yet in the cluster's log
//!              Fenced: every append is refused until the table is loaded again
//! ```
//! - append, `Shared`: the batch goes to the local file (fsynced, [`Fence::LOCAL`]), then to
//!   Redis with the caller's fence. Ok from Redis is Ok. `Fenced` is returned as is (the caller
//!   steps down and acknowledges nothing); the refused batch is cut from the local file (the
//!   file before the cut is kept as `<table>.log.diverged-<unix ms>`). Any other Redis error
//!   makes the table spool, and the append is Ok.
//! - [`SpooledStore::backfill`], once Redis is back: copies the local records after Redis's last
//!   entry to Redis, fenced, in order, in batches; when caught up the table is `Shared` again.
//!   The owner calls it while [`SpooledStore::is_spooling`] (e.g. on each lease renewal).
//! - load: reads Redis (the truth, whoever wrote it), then makes the local file its mirror:
//!   a local prefix of Redis gets the missing tail; a local file that extends Redis (records
//!   spooled before a restart) is kept and the table spools; a local file that diverges (this
//!   node wrote after it was fenced off, never acknowledged) or is damaged is moved aside
//!   (`<table>.log.diverged-<unix ms>`, with a warning) and Redis's records written fresh. With
//!   Redis unreachable, load returns the local records and the table spools.
//!
//! One async lock per table serialises load, append and backfill of that table.

use super::{EventStore, Fence, FileStore, RedisStore, StoreError, StoreFuture};
use crate::ids::TableId;
use crate::table::Record;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Most records one backfill append carries.
pub const BACKFILL_BATCH: usize = 500;

/// Where a table's appends go (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Shared,
    Spooling,
    Fenced,
}

/// The cluster's [`EventStore`]: a local mirror and Redis. See the module doc.
pub struct SpooledStore {
    local: FileStore,
    redis: RedisStore,
    tables: Mutex<HashMap<TableId, Arc<tokio::sync::Mutex<Mode>>>>,
}

impl SpooledStore {
    pub fn new(local: FileStore, redis: RedisStore) -> SpooledStore {
        SpooledStore {
            local,
            redis,
            tables: Mutex::new(HashMap::new()),
        }
    }

    /// The local mirror (for its paths and stats).
    pub fn local(&self) -> &FileStore {
        &self.local
    }

    pub fn redis(&self) -> &RedisStore {
        &self.redis
    }

    /// Whether the table's appends go to the local file only, waiting for a backfill.
    pub async fn is_spooling(&self, table: &TableId) -> bool {
        *self.slot(table).lock().await == Mode::Spooling
    }

    /// Copies the records this node spooled to Redis, with `fence`, and returns how many.
    /// When Redis holds them all the table is shared again. Redis unreachable: the table keeps
    /// spooling and the error is returned (call again later). Redis holding records this node
    /// lacks, or other ones (a newer owner wrote): [`StoreError::Fenced`], and the table
    /// refuses appends until it is loaded again.
    pub async fn backfill(&self, table: &TableId, fence: Fence) -> Result<usize, StoreError> {
        let slot = self.slot(table);
        let mut mode = slot.lock().await;
        if *mode != Mode::Spooling {
            return Ok(0);
        }
        let remote = self.redis.load(table).await?;
        let local = self.local.load(table).await?;
        if !local.starts_with(&remote) {
            tracing::warn!(table = %table, redis = remote.len(), local = local.len(),
                "backfill refused: Redis holds records this node does not have (a newer owner \
                 wrote); this node stops writing the table");
            *mode = Mode::Fenced;
            return Err(StoreError::Fenced {
                table: table.clone(),
                fence,
            });
        }
        let missing = &local[remote.len()..];
        for (n, batch) in missing.chunks(BACKFILL_BATCH).enumerate() {
            if let Err(e) = self.redis.append(table, fence, batch.to_vec()).await {
                if matches!(e, StoreError::Fenced { .. }) {
                    *mode = Mode::Fenced;
                }
                tracing::warn!(table = %table, copied = n * BACKFILL_BATCH, error = %e,
                    "backfill stopped; the table keeps spooling");
                return Err(e);
            }
        }
        tracing::info!(table = %table, copied = missing.len(),
            "backfill done: Redis holds every record again; appends go to both");
        *mode = Mode::Shared;
        Ok(missing.len())
    }

    fn slot(&self, table: &TableId) -> Arc<tokio::sync::Mutex<Mode>> {
        // No code holding the lock can panic half-way through a change.
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        tables.entry(table.clone()).or_default().clone()
    }

    async fn load_table(&self, table: &TableId) -> Result<Vec<Record>, StoreError> {
        let slot = self.slot(table);
        let mut mode = slot.lock().await;
        let remote = match self.redis.load(table).await {
            Ok(remote) => remote,
            Err(e @ StoreError::Unreachable { .. }) => {
                tracing::warn!(table = %table, error = %e,
                    "Redis is unreachable: the table starts from this node's local copy and \
                     spools (its appends stay on this node until a backfill)");
                let local = self.local.load(table).await?;
                *mode = Mode::Spooling;
                return Ok(local);
            }
            Err(e) => return Err(e),
        };
        let local = match self.local.load(table).await {
            Ok(local) => Some(local),
            Err(e @ StoreError::Corrupt { .. }) => {
                tracing::warn!(table = %table, error = %e,
                    "the local copy is damaged; it is replaced by Redis's log");
                None
            }
            Err(e) => return Err(e),
        };
        match local {
            Some(local) if remote.starts_with(&local) => {
                let tail = remote[local.len()..].to_vec();
                self.local.append(table, Fence::LOCAL, tail).await?;
                *mode = Mode::Shared;
                Ok(remote)
            }
            Some(local) if local.starts_with(&remote) => {
                tracing::warn!(table = %table, spooled = local.len() - remote.len(),
                    "the local copy holds records Redis lacks (spooled before a restart): the \
                     table spools until a backfill copies them");
                *mode = Mode::Spooling;
                Ok(local)
            }
            _ => {
                let aside = self.local.replace(table, &remote).await?;
                tracing::warn!(table = %table, aside = ?aside, records = remote.len(),
                    "the local copy diverged from Redis (records written after this node was \
                     fenced off, never acknowledged): moved it aside and mirrored Redis");
                *mode = Mode::Shared;
                Ok(remote)
            }
        }
    }

    async fn append_records(
        &self,
        table: &TableId,
        fence: Fence,
        records: Vec<Record>,
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let slot = self.slot(table);
        let mut mode = slot.lock().await;
        if *mode == Mode::Fenced {
            return Err(StoreError::Fenced {
                table: table.clone(),
                fence,
            });
        }
        let count = records.len();
        self.local
            .append(table, Fence::LOCAL, records.clone())
            .await?;
        if *mode == Mode::Spooling {
            return Ok(());
        }
        match self.redis.append(table, fence, records).await {
            Ok(()) => Ok(()),
            Err(e @ StoreError::Fenced { .. }) => {
                *mode = Mode::Fenced;
                self.cut_refused(table, count).await;
                Err(e)
            }
            Err(e) => {
                tracing::warn!(table = %table, error = %e,
                    "Redis did not take the append: the table spools (appends are durable on \
                     this node's disk only until a backfill copies them to Redis)");
                *mode = Mode::Spooling;
                Ok(())
            }
        }
    }

    /// Cuts the last `count` records (a batch Redis refused) from the local file, so that it
    /// never passes them off as spooled ones.
    async fn cut_refused(&self, table: &TableId, count: usize) {
        let cut = async {
            let local = self.local.load(table).await?;
            let keep = local.len().saturating_sub(count);
            self.local.replace(table, &local[..keep]).await
        };
        match cut.await {
            Ok(aside) => tracing::warn!(table = %table, refused = count, aside = ?aside,
                "cut the batch Redis refused from the local copy"),
            Err(e) => tracing::error!(table = %table, error = %e,
                "cannot cut the batch Redis refused from the local copy: if Redis still lacks it at the next load, that load takes it for spooled records"),
        }
    }
}

impl EventStore for SpooledStore {
    fn load<'a>(&'a self, table: &'a TableId) -> StoreFuture<'a, Vec<Record>> {
        Box::pin(self.load_table(table))
    }

    fn append<'a>(
        &'a self,
        table: &'a TableId,
        fence: Fence,
        records: Vec<Record>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.append_records(table, fence, records))
    }

    fn kind(&self) -> &'static str {
        "spooled"
    }

    fn backfill<'a>(&'a self, table: &'a TableId, fence: Fence) -> StoreFuture<'a, usize> {
        Box::pin(SpooledStore::backfill(self, table, fence))
    }

    fn spooling<'a>(
        &'a self,
        table: &'a TableId,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(self.is_spooling(table))
    }
}
