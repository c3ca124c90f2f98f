//! `RedisStore`: the cluster's shared log, one Redis stream per table (the entry format is in
//! [`crate::store`]'s module doc; key names in [`crate::cluster::keys`]).
//!
//! # Append
//! The store keeps each table's chain head (`i`, last `sha256`) from its last load or append,
//! or reads the stream's last entry when it has none. It chains the batch to that head, then
//! runs ONE Lua script (`redis/entries.rs`) that, atomically:
//! 1. refuses unless the table's owner key starts with `"<fence>:"` (the caller still holds
//!    the lease) → [`StoreError::Fenced`];
//! 2. refuses unless the stream's last id is `<head i>-0` (nobody else appended since) →
//!    [`StoreError::Fenced`] too, and the cached head is dropped;
//! 3. `XADD`s every entry with its explicit id `<i>-0`.
//!
//! A refused append adds nothing. A connection error or a timeout (no answer within about
//! 1.5 s: the node must not hang on an outage) is [`StoreError::Unreachable`] and drops the
//! cached head, so the next append reads the stream again. Such an append may or may not have
//! landed: the next append or load finds out from the stream itself.
//!
//! # Load
//! `XRANGE` in pages of [`PAGE`], each entry checked with the file log's rules (`i` from 1
//! without a gap, `prev`, `sha256`, the record, event seqs): a bad entry is
//! [`StoreError::RedisCorrupt`], naming the table, the entry and the audit command.
//!
//! Appends to one table through one `RedisStore` are serialised (a per-table async lock held
//! over the round trip), so a node's own appends never race each other.

mod entries;

use super::chain::{self, Head, LineProblem, SeqCheck};
use super::{AuditReport, EventStore, Fence, StoreError, StoreFuture};
use crate::cluster::keys;
use crate::ids::TableId;
use crate::table::Record;
use entries::Outcome;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, ServerErrorKind};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Entries per `XRANGE` page on load.
pub const PAGE: usize = 1000;
/// Longest wait for a TCP connection, and for one reply.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest one round trip may take, reconnection attempts included, before it counts as an
/// outage.
const ROUND_TRIP: Duration = Duration::from_millis(1500);

/// The chain head of one table, if known, behind the lock that serialises its appends.
type Slot = Arc<tokio::sync::Mutex<Option<Head>>>;

/// An [`EventStore`] over Redis Streams. See the module doc.
pub struct RedisStore {
    con: ConnectionManager,
    /// The URL without its password, for messages.
    url: String,
    /// `WAIT` after each append: (replicas, timeout ms).
    wait: Option<(u32, u64)>,
    tables: Mutex<HashMap<TableId, Slot>>,
}

/// A whole stream, checked.
struct Checked {
    records: Vec<Record>,
    head: Head,
    seqs: SeqCheck,
}

impl RedisStore {
    /// Connects to `url` (`redis://[:password@]host:port/db`). Fails with
    /// [`StoreError::Connect`] when the URL is malformed or the server does not answer.
    pub async fn connect(url: &str) -> Result<RedisStore, StoreError> {
        let shown = redact(url);
        let failed = |detail: String| StoreError::Connect {
            url: shown.clone(),
            detail,
        };
        let client = redis::Client::open(url).map_err(|e| failed(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        let con = tokio::time::timeout(
            ROUND_TRIP,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| failed(format!("no answer within {} ms", ROUND_TRIP.as_millis())))?
        .map_err(|e| failed(e.to_string()))?;
        tracing::info!(url = %shown, "redis store connected");
        Ok(RedisStore {
            con,
            url: shown,
            wait: None,
            tables: Mutex::new(HashMap::new()),
        })
    }

    /// After each append, waits (Redis `WAIT`) until `replicas` replicas have it, for at most
    /// `timeout_ms`; fewer is [`StoreError::Unreachable`] (the append is then on the primary
    /// only, and may be lost if it fails over).
    pub fn with_wait(mut self, replicas: u32, timeout_ms: u64) -> RedisStore {
        self.wait = Some((replicas, timeout_ms));
        self
    }

    /// The URL, without its password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `i` of the table's last entry (0: none), read now and not checked.
    pub async fn head(&self, table: &TableId) -> Result<u64, StoreError> {
        Ok(self.last_head(table).await?.i)
    }

    /// Checks the whole stream as [`load`](EventStore::load) does, and sums it up; for
    /// `tablecast audit verify --redis-url URL --table T`. A bad entry is
    /// [`StoreError::RedisCorrupt`].
    pub async fn audit(&self, table: &TableId) -> Result<AuditReport, StoreError> {
        let checked = self.read_all(table).await?;
        Ok(AuditReport {
            records: checked.head.i,
            events: checked.seqs.events,
            last_seq: checked.seqs.last_seq,
            last_hash: checked.head.hash,
        })
    }

    fn slot(&self, table: &TableId) -> Slot {
        // No code holding the lock can panic half-way through a change.
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        tables.entry(table.clone()).or_default().clone()
    }

    fn corrupt(&self, table: &TableId, entry: u64, id: &str, reason: LineProblem) -> StoreError {
        StoreError::RedisCorrupt {
            table: table.clone(),
            url: self.url.clone(),
            entry,
            id: id.to_owned(),
            reason: Box::new(reason),
        }
    }

    /// Every entry of the table's stream, checked.
    async fn read_all(&self, table: &TableId) -> Result<Checked, StoreError> {
        let key = keys::log(table);
        let mut checked = Checked {
            records: Vec::new(),
            head: Head::genesis(),
            seqs: SeqCheck::default(),
        };
        let mut start = "-".to_owned();
        loop {
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&key).arg(&start).arg("+").arg("COUNT").arg(PAGE);
            let cmd = &cmd;
            let reply = self
                .round_trip(table, true, ROUND_TRIP, |mut con| async move {
                    cmd.query_async::<redis::Value>(&mut con).await
                })
                .await?;
            let next = checked.head.i + 1;
            let page = entries::parse_range(reply)
                .map_err(|reason| self.corrupt(table, next, "?", reason))?;
            let full = page.len() >= PAGE;
            for entry in page {
                let i = checked.head.i + 1;
                let record = entry
                    .check(&mut checked.head)
                    .and_then(|record| checked.seqs.check(&record).map(|()| record))
                    .map_err(|reason| self.corrupt(table, i, &entry.id, reason))?;
                checked.records.push(record);
                start = format!("({}", entry.id);
            }
            if !full {
                return Ok(checked);
            }
        }
    }

    /// The head the table's last entry ends (genesis for an empty stream).
    async fn last_head(&self, table: &TableId) -> Result<Head, StoreError> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(keys::log(table))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let cmd = &cmd;
        let reply = self
            .round_trip(table, true, ROUND_TRIP, |mut con| async move {
                cmd.query_async::<redis::Value>(&mut con).await
            })
            .await?;
        let last =
            entries::parse_range(reply).map_err(|reason| self.corrupt(table, 0, "?", reason))?;
        match last.first() {
            None => Ok(Head::genesis()),
            Some(entry) => entry.head().map_err(|reason| {
                let i = entry.index().unwrap_or(0);
                self.corrupt(table, i, &entry.id, reason)
            }),
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
        let jsons = records
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| StoreError::Encode {
                table: table.clone(),
                source,
            })?;
        let slot = self.slot(table);
        let mut cached = slot.lock().await;
        // Taken: on any failure below the head is re-read next time.
        let head = match cached.take() {
            Some(head) => head,
            None => self.last_head(table).await?,
        };
        let mut next = head.clone();
        let mut invocation = entries::APPEND.prepare_invoke();
        invocation
            .key(keys::owner(table))
            .key(keys::log(table))
            .arg(fence.0)
            .arg(head.i);
        for json in &jsons {
            let link = chain::next_link(&mut next, json);
            invocation
                .arg(link.i)
                .arg(link.prev)
                .arg(link.sha256)
                .arg(json);
        }
        let invocation = &invocation;
        let reply = self
            .round_trip(table, false, ROUND_TRIP, |mut con| async move {
                invocation.invoke_async::<Vec<String>>(&mut con).await
            })
            .await?;
        match entries::outcome(&reply) {
            Ok(Outcome::Appended) => {}
            Ok(Outcome::Fenced { owner }) => {
                tracing::warn!(table = %table, fence = %fence, owner = %owner,
                    "append refused: the table's lease is not held with this fence");
                *cached = Some(head);
                return Err(StoreError::Fenced {
                    table: table.clone(),
                    fence,
                });
            }
            Ok(Outcome::Moved { last }) => {
                tracing::warn!(table = %table, fence = %fence, expected = head.i, last = %last,
                    "append refused: another writer appended to the table's log");
                return Err(StoreError::Fenced {
                    table: table.clone(),
                    fence,
                });
            }
            Err(detail) => {
                return Err(StoreError::Refused {
                    table: table.clone(),
                    detail,
                });
            }
        }
        if let Some((replicas, timeout_ms)) = self.wait {
            let mut cmd = redis::cmd("WAIT");
            cmd.arg(replicas).arg(timeout_ms);
            let cmd = &cmd;
            let within = ROUND_TRIP + Duration::from_millis(timeout_ms);
            let acked = self
                .round_trip(table, false, within, |mut con| async move {
                    cmd.query_async::<u64>(&mut con).await
                })
                .await?;
            if acked < u64::from(replicas) {
                return Err(StoreError::Unreachable {
                    table: table.clone(),
                    detail: format!(
                        "only {acked} of {replicas} replicas acknowledged the append within \
                         {timeout_ms} ms (it is on the primary)"
                    ),
                });
            }
        }
        *cached = Some(next);
        Ok(())
    }

    /// Runs `call` on a connection within `within`. A connection that was refused is tried
    /// once more (nothing was sent), as is any I/O error when `idempotent`; the connection
    /// manager reconnects in between.
    async fn round_trip<T, F, Fut>(
        &self,
        table: &TableId,
        idempotent: bool,
        within: Duration,
        call: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut retried = false;
        loop {
            let e = match tokio::time::timeout(within, call(self.con.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => e,
                Err(_) => {
                    return Err(StoreError::Unreachable {
                        table: table.clone(),
                        detail: format!("no answer within {} ms", within.as_millis()),
                    });
                }
            };
            let again = e.is_connection_refusal() || (idempotent && e.is_io_error());
            if again && !retried {
                tracing::debug!(table = %table, error = %e, "redis round trip failed; trying once more");
                retried = true;
                continue;
            }
            return Err(error(table, e));
        }
    }
}

/// Outages (I/O, a server loading its data or without a master) are `Unreachable`; anything
/// else Redis refused is `Refused`.
fn error(table: &TableId, e: RedisError) -> StoreError {
    let outage = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
            )
        );
    if outage {
        StoreError::Unreachable {
            table: table.clone(),
            detail: e.to_string(),
        }
    } else {
        StoreError::Refused {
            table: table.clone(),
            detail: e.to_string(),
        }
    }
}

/// `url` with any password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

impl EventStore for RedisStore {
    fn load<'a>(&'a self, table: &'a TableId) -> StoreFuture<'a, Vec<Record>> {
        Box::pin(async move {
            let slot = self.slot(table);
            let mut cached = slot.lock().await;
            *cached = None;
            let checked = self.read_all(table).await?;
            *cached = Some(checked.head);
            Ok(checked.records)
        })
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
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("redis://:hunter2@db:6379/0"),
            "redis://:***@db:6379/0"
        );
        assert_eq!(redact("rediss://app:p@ss@db/1"), "rediss://app:***@db/1");
    }

    #[tokio::test]
    async fn a_bad_url_says_how_to_write_one() {
        let e = RedisStore::connect("http://nowhere").await.err().unwrap();
        let text = e.to_string();
        assert!(matches!(e, StoreError::Connect { .. }), "{text}");
        assert!(text.contains("[cluster] redis_url"), "{text}");
    }
}
