//! The durable per-table event log: every [`Record`] a table produces, appended in order and
//! read back once when the table starts (see [`crate::table`]'s driving contract: outputs that
//! follow a record are not delivered until the record is durable).
//!
//! - [`EventStore`]: the trait the table actor uses. Only `app.rs` names an implementation.
//! - [`FileStore`] (`file.rs`): the embedded default, one hash-chained JSON-lines file per table
//!   under `[data] dir`, written by one thread that group-commits every pending append.
//! - [`RedisStore`] (`redis.rs`, `redis/entries.rs`): the cluster's shared log, one Redis stream
//!   per table; every append is fenced and chained in one Lua script.
//! - [`SpooledStore`] (`spool.rs`): a cluster node's store. Each batch goes to a local
//!   `FileStore` first (fsynced), then to Redis with the caller's fence. While Redis is
//!   unreachable a table "spools": its appends succeed once on local disk only (durable on
//!   this node, not yet shared), and [`SpooledStore::backfill`] copies them to Redis later.
//! - [`MemoryStore`] (`memory.rs`): nothing durable, for tests of other modules.
//! - `chain.rs`: the line format and its checks, shared by `FileStore`, `RedisStore` and [`audit`].
//! - [`audit`]: `tablecast audit verify PATH`, a strict check of one log file
//!   (`--redis-url URL --table T` checks a Redis log with [`RedisStore::audit`]).
//!
//! # File format
//! One line per record, exactly
//! `{"i":N,"prev":"<64 hex>","sha256":"<64 hex>","record":<record JSON>}` and `\n`, where `i`
//! counts from 1, `prev` is the `sha256` of the line before (64 zeros on line 1) and
//! `sha256 = SHA-256(prev || "\n" || record)` over the bytes as written. Changing, removing or
//! reordering any byte of any line breaks the chain from that line on.
//!
//! # Redis format
//! Stream `tablecast:table:{T}:log` ([`crate::cluster::keys::log`]). Entry `i` (from 1) has the
//! stream id `<i>-0`, so that `XADD` itself refuses a gap's reordering or a duplicate, and
//! exactly the fields `prev`, `sha256`, `record` (the record JSON, as `serde_json::to_string`
//! writes it) and `fence` (the writer's [`Fence`]), with the chain rule of the file format.

pub mod audit;
mod chain;
mod file;
mod memory;
mod redis;
mod spool;

pub use audit::{AuditError, AuditReport};
pub use chain::{GENESIS_HASH, LineProblem};
pub use file::{FileStore, FileStoreStats};
pub use memory::MemoryStore;
pub use redis::RedisStore;
pub use spool::SpooledStore;

pub use crate::cluster::Fence;
use crate::ids::TableId;
use crate::table::Record;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;

/// What [`EventStore`] methods return: a boxed future, so the trait stays object safe
/// (`Arc<dyn EventStore>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A per-table append-only log of `Record`s. Implementations: [`FileStore`], [`RedisStore`],
/// [`SpooledStore`] (both, for a cluster node) and [`MemoryStore`].
pub trait EventStore: Send + Sync + 'static {
    /// Every record of the table, in append order (empty for a new table). Called once per table at start.
    fn load<'a>(&'a self, table: &'a TableId) -> StoreFuture<'a, Vec<Record>>;
    /// Appends `records` in order; resolves only once they are durable (fsynced for FileStore).
    /// The caller batches: one call per batch of table outputs (group commit), so one fsync per call.
    /// `fence` is the caller's ownership lease (see [`crate::cluster`]): a store shared by a
    /// cluster refuses it with [`StoreError::Fenced`] once a newer owner exists, and appends
    /// nothing. A node's own store takes [`Fence::LOCAL`].
    fn append<'a>(
        &'a self,
        table: &'a TableId,
        fence: Fence,
        records: Vec<Record>,
    ) -> StoreFuture<'a, ()>;
    /// A short name for logs ("file", "redis").
    fn kind(&self) -> &'static str;
    /// Copies to the shared log what a store kept only locally while the shared log was away
    /// (see `SpooledStore`); the number of records copied. Stores without a shared log copy
    /// nothing.
    fn backfill<'a>(&'a self, _table: &'a TableId, _fence: Fence) -> StoreFuture<'a, usize> {
        Box::pin(async { Ok(0) })
    }
    /// True while the table's appends reach only this node's disk, not the shared log (see
    /// `SpooledStore`). Stores without a shared log say false.
    fn spooling<'a>(
        &'a self,
        _table: &'a TableId,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async { false })
    }
}

/// Why the store could not load or append. Each message ends with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create {}: {source}: {}", path.display(), fix(source))]
    CreateDir { path: PathBuf, source: io::Error },
    #[error(
        "{} is locked by another tablecast process: stop it, or give each node its own [data] dir",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error("cannot read {}: {source}: {}", path.display(), fix(source))]
    Read { path: PathBuf, source: io::Error },
    /// A write or fsync failed. The records of that call are not in the log (the file is cut
    /// back to where it was) unless the cut failed too, in which case the next load reads them.
    #[error("cannot write {}: {source}: {}", path.display(), fix(source))]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "{} line {line} is damaged: {reason}: run `tablecast audit verify {}` for a report, then \
         restore the file from a backup or move it aside (the table then starts with no history)",
        path.display(), path.display()
    )]
    Corrupt {
        path: PathBuf,
        line: u64,
        reason: LineProblem,
    },
    #[error("cannot encode a record of table {table}: {source}: this is a bug, please report it")]
    Encode {
        table: TableId,
        source: serde_json::Error,
    },
    #[error("cannot start the store's writer thread: {0}: raise the thread limit (`ulimit -u`)")]
    Spawn(io::Error),
    #[error("the store's writer thread has stopped (the log above says why): restart tablecast")]
    Stopped,
    /// Another node holds a newer lease on the table: this node must stop writing it.
    #[error(
        "table {table}: another node now owns it (this node's fence {fence} is stale); this node stopped writing it and its players follow the new owner"
    )]
    Fenced { table: TableId, fence: Fence },
    /// The writer's lease could not be renewed before it lapsed, and other nodes can reach
    /// Redis: another node may own the table now, so this one acknowledges nothing more.
    #[error(
        "table {table}: this node could not renew its lease before it lapsed while other nodes reach Redis; it stopped writing the table (nothing after was acknowledged); check this node's connection to Redis"
    )]
    LeaseLapsed { table: TableId },
    /// The shared log cannot be reached (Redis is away).
    #[error(
        "table {table}: the cluster's log is unreachable: {detail}; check the Redis server and [cluster] redis_url"
    )]
    Unreachable { table: TableId, detail: String },
    /// The Redis URL is malformed, or the first connection to it failed.
    #[error(
        "cannot connect to Redis at {url}: {detail}: check [cluster] redis_url \
         (redis://[:password@]host:port/db) and that redis-server runs and is reachable from this host"
    )]
    Connect { url: String, detail: String },
    /// An entry of a table's Redis stream breaks the chain (see [`RedisStore`]).
    #[error(
        "table {table}: entry {entry} (stream id {id}) of its Redis log is damaged: {reason}: run \
         `tablecast audit verify --redis-url {url} --table {table}` for a report, then restore the \
         stream from a Redis backup (AOF or RDB) or delete it (the table then starts with no history)"
    )]
    RedisCorrupt {
        table: TableId,
        /// The Redis URL, without its password.
        url: String,
        /// The `i` the entry should have had.
        entry: u64,
        id: String,
        /// Boxed: it keeps every `Result<_, StoreError>` small.
        reason: Box<LineProblem>,
    },
    /// Redis answered, but refused a command (a key of the wrong type, a script error).
    #[error(
        "table {table}: Redis refused the log command: {detail}: check that no other program writes \
         tablecast's keys (tablecast:table:{{{table}}}:*) and that Redis is 7.0 or newer"
    )]
    Refused { table: TableId, detail: String },
}

/// The operator's fix for an I/O error, by kind.
fn fix(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            "free disk space or set [data] dir"
        }
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            "let the tablecast user write there or set [data] dir"
        }
        io::ErrorKind::NotFound => "check that [data] dir exists and is mounted",
        _ => "check the disk (`dmesg`), free space and permissions, or set [data] dir",
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Records and scenarios shared by the tests of every store.

    use super::{EventStore, Fence};
    use crate::ids::{BetId, TableId, UserId};
    use crate::protocol::{PublicEvent, SequencedEvent, ServerTime};
    use crate::table::Record;
    use std::path::PathBuf;

    /// A fresh directory under the system temp dir, removed when dropped.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("tablecast-store-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub fn table(name: &str) -> TableId {
        TableId::parse(name).unwrap()
    }

    /// A record that names who wrote it and its number: `user` = caller, `at` = n.
    pub fn mute(caller: usize, n: u64) -> Record {
        Record::ChatMute {
            at: ServerTime(n),
            user: UserId::parse(&format!("u{caller}")).unwrap(),
            muted: n.is_multiple_of(2),
        }
    }

    /// A public `chat` event with this seq; its text has characters JSON must escape.
    pub fn event(seq: u64) -> Record {
        Record::Event(SequencedEvent {
            seq,
            server_ms: ServerTime(1_700_000_000_000 + seq),
            event: PublicEvent::Chat {
                id: BetId::parse(&format!("c{seq}")).unwrap(),
                user: UserId::parse("alice").unwrap(),
                text: format!("hi \"{seq}\"\n\u{e9}\u{1f3b2}"),
            },
        })
    }

    /// The same behaviour, whatever the store: loads give back appends in order, per table.
    pub async fn appends_load_back_in_order_per_table(store: &dyn EventStore) {
        let (a, b) = (table("contract-a"), table("contract-b"));
        assert_eq!(store.load(&a).await.unwrap(), vec![]);
        store
            .append(&a, Fence::LOCAL, vec![event(1), mute(0, 1)])
            .await
            .unwrap();
        store
            .append(&b, Fence::LOCAL, vec![mute(1, 1)])
            .await
            .unwrap();
        store.append(&a, Fence::LOCAL, vec![]).await.unwrap();
        store
            .append(&a, Fence::LOCAL, vec![event(2)])
            .await
            .unwrap();
        assert_eq!(
            store.load(&a).await.unwrap(),
            vec![event(1), mute(0, 1), event(2)]
        );
        assert_eq!(store.load(&b).await.unwrap(), vec![mute(1, 1)]);
        assert!(!store.kind().is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_say_what_to_do() {
        let e = StoreError::Write {
            path: "data/tables/demo.log".into(),
            source: io::Error::from(io::ErrorKind::StorageFull),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("cannot write data/tables/demo.log: "),
            "{text}"
        );
        assert!(
            text.ends_with("free disk space or set [data] dir"),
            "{text}"
        );
    }

    #[test]
    fn a_corrupt_log_points_at_the_audit_command() {
        let e = StoreError::Corrupt {
            path: "data/tables/demo.log".into(),
            line: 7,
            reason: LineProblem::NotCanonical,
        };
        let text = e.to_string();
        assert!(text.contains("line 7"), "{text}");
        assert!(
            text.contains("tablecast audit verify data/tables/demo.log"),
            "{text}"
        );
    }
}
