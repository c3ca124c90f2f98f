//! `FileStore`: one hash-chained JSON-lines file per table, `{dir}/tables/{table}.log`.
//!
//! # Writer
//! One thread owns every file, and all table state: the open handle, the chain head (`i`,
//! last `sha256`) and the length of whole lines. Callers send it requests over a channel and
//! await a oneshot reply. The thread runs rounds (group commit across callers and tables):
//! ```text
//!   wait for one request ──▶ take every other request already queued (up to MAX_ROUND)
//!        ▲                     appends: encode lines, chained, into the table's pending bytes
//!        │                     load:    commit that table's pending bytes first, then read
//!        │                              the file (cutting off a torn last line)
//!        └── reply to all ◀── per table touched: one write, one fdatasync (tables in parallel)
//! ```
//! While one round syncs, the next requests queue up and go out together in the next round:
//! under load there are far fewer fsyncs than appends, and an idle store adds no delay.
//!
//! A failed write or fsync cuts the file back to its length before the round, fails every
//! append of that table in the round, and forgets the table's state: the next request reads
//! the file again. Dropping an `append` future does not cancel the append.
//!
//! A `LOCK` file in `{dir}/tables` (an advisory `flock`) keeps a second process, or a second
//! `FileStore` on the same dir, from forking the chains.

use super::chain::{self, Head, ScanError};
use super::{EventStore, Fence, StoreError, StoreFuture};
use crate::ids::TableId;
use crate::table::Record;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use tokio::sync::oneshot;

/// Most requests one round takes, so the first of them is not kept waiting without bound.
const MAX_ROUND: usize = 4096;
/// Most files synced at once when a round touches several tables.
const SYNC_THREADS: usize = 8;

/// The embedded default [`EventStore`]. See the module doc.
pub struct FileStore {
    tables_dir: PathBuf,
    /// `None` only while dropping.
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<thread::JoinHandle<()>>,
    counters: Arc<Counters>,
}

/// What the writer has done since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileStoreStats {
    /// `append` calls with at least one record that were written.
    pub appends: u64,
    /// Records written.
    pub records: u64,
    /// Rounds that wrote something (see the module doc).
    pub rounds: u64,
    /// `fdatasync` calls on table files.
    pub fsyncs: u64,
}

#[derive(Default)]
struct Counters {
    appends: AtomicU64,
    records: AtomicU64,
    rounds: AtomicU64,
    fsyncs: AtomicU64,
}

enum Request {
    Load {
        table: TableId,
        reply: oneshot::Sender<Result<Vec<Record>, StoreError>>,
    },
    Append {
        table: TableId,
        /// Each record as `serde_json::to_string` wrote it (encoded by the caller's task).
        records: Vec<String>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// See [`FileStore::replace`] (`file/replace.rs`).
    Replace {
        table: TableId,
        records: Vec<String>,
        reply: oneshot::Sender<Result<Option<PathBuf>, StoreError>>,
    },
}

impl FileStore {
    /// Opens (creating if needed) `dir/tables/` and starts the writer thread.
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        let tables_dir = dir.join("tables");
        if !tables_dir.is_dir() {
            let create = |path: &Path| {
                let path = path.to_owned();
                move |source| StoreError::CreateDir { path, source }
            };
            fs::create_dir_all(&tables_dir).map_err(create(&tables_dir))?;
            sync_dir(dir).map_err(create(dir))?;
            sync_dir(&tables_dir).map_err(create(&tables_dir))?;
        }
        let lock_path = tables_dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StoreError::CreateDir {
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::Locked { path: lock_path }),
            Err(TryLockError::Error(source)) => {
                return Err(StoreError::CreateDir {
                    path: lock_path,
                    source,
                });
            }
        }
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            tables_dir: tables_dir.clone(),
            logs: HashMap::new(),
            counters: counters.clone(),
            _lock: lock,
        };
        let (requests, rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("tablecast-store".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(StoreError::Spawn)?;
        tracing::info!(dir = %tables_dir.display(), "file store open");
        Ok(FileStore {
            tables_dir,
            requests: Some(requests),
            writer: Some(handle),
            counters,
        })
    }

    /// The file that holds `table`'s log (for `tablecast audit verify`).
    pub fn log_path(&self, table: &TableId) -> PathBuf {
        log_path(&self.tables_dir, table)
    }

    pub fn stats(&self) -> FileStoreStats {
        let c = &self.counters;
        FileStoreStats {
            appends: c.appends.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            rounds: c.rounds.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
        }
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        let requests = self.requests.as_ref().ok_or(StoreError::Stopped)?;
        requests.send(request).map_err(|_| StoreError::Stopped)
    }
}

impl EventStore for FileStore {
    fn load<'a>(&'a self, table: &'a TableId) -> StoreFuture<'a, Vec<Record>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            self.send(Request::Load {
                table: table.clone(),
                reply,
            })?;
            answer.await.map_err(|_| StoreError::Stopped)?
        })
    }

    fn append<'a>(
        &'a self,
        table: &'a TableId,
        _fence: Fence,
        records: Vec<Record>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if records.is_empty() {
                return Ok(());
            }
            let records = records
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| StoreError::Encode {
                    table: table.clone(),
                    source,
                })?;
            let (reply, answer) = oneshot::channel();
            self.send(Request::Append {
                table: table.clone(),
                records,
                reply,
            })?;
            answer.await.map_err(|_| StoreError::Stopped)?
        })
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

impl Drop for FileStore {
    /// Lets the writer finish what is queued, then waits for it (so the `LOCK` is released).
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("the file store's writer thread panicked");
        }
    }
}

fn log_path(tables_dir: &Path, table: &TableId) -> PathBuf {
    // A `TableId` is 1 to 64 of [A-Za-z0-9._-]: with the suffix it cannot leave the dir.
    tables_dir.join(format!("{table}.log"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One table's open log, owned by the writer.
struct TableLog {
    path: PathBuf,
    file: File,
    head: Head,
    /// Bytes of whole lines on disk.
    len: u64,
}

/// One table's appends of the round in progress.
struct Pending {
    table: TableId,
    /// Its head already covers `bytes`; `len` does not yet.
    log: TableLog,
    bytes: Vec<u8>,
    appends: u64,
    records: u64,
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

struct Writer {
    tables_dir: PathBuf,
    /// Tables with no appends in the round in progress (those are in the round's `Pending`).
    logs: HashMap<TableId, TableLog>,
    counters: Arc<Counters>,
    /// Held (and so locked) for as long as the writer runs.
    _lock: File,
}

impl Writer {
    fn run(mut self, requests: mpsc::Receiver<Request>) {
        let _span = tracing::info_span!("store_writer", dir = %self.tables_dir.display()).entered();
        while let Ok(first) = requests.recv() {
            let mut round: Vec<Pending> = Vec::new();
            self.take(first, &mut round);
            for request in requests.try_iter().take(MAX_ROUND - 1) {
                self.take(request, &mut round);
            }
            self.commit(round);
        }
    }

    fn take(&mut self, request: Request, round: &mut Vec<Pending>) {
        match request {
            Request::Append {
                table,
                records,
                reply,
            } => {
                let at = match round.iter().position(|p| p.table == table) {
                    Some(at) => at,
                    None => match self.open(&table, false) {
                        Ok((log, _)) => {
                            round.push(Pending {
                                table,
                                log,
                                bytes: Vec::new(),
                                appends: 0,
                                records: 0,
                                waiters: Vec::new(),
                            });
                            round.len() - 1
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            return;
                        }
                    },
                };
                let pending = &mut round[at];
                for json in &records {
                    chain::encode_line(&mut pending.log.head, json, &mut pending.bytes);
                }
                pending.appends += 1;
                pending.records += records.len() as u64;
                pending.waiters.push(reply);
            }
            Request::Load { table, reply } => {
                self.commit_table(&table, round);
                self.logs.remove(&table);
                let loaded = self.open(&table, true).map(|(log, records)| {
                    self.logs.insert(table, log);
                    records
                });
                let _ = reply.send(loaded);
            }
            Request::Replace {
                table,
                records,
                reply,
            } => {
                self.commit_table(&table, round);
                let _ = reply.send(self.replace(&table, &records));
            }
        }
    }

    /// The table's log: kept from before, or opened (created if new) and read to its end.
    /// With `keep`, also every record in it.
    fn open(&mut self, table: &TableId, keep: bool) -> Result<(TableLog, Vec<Record>), StoreError> {
        if !keep && let Some(log) = self.logs.remove(table) {
            return Ok((log, Vec::new()));
        }
        let path = log_path(&self.tables_dir, table);
        let read_error = |source| StoreError::Read {
            path: path.clone(),
            source,
        };
        let options = || {
            let mut o = OpenOptions::new();
            o.read(true).append(true);
            o
        };
        let file = match options().open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let write_error = |source| StoreError::Write {
                    path: path.clone(),
                    source,
                };
                let file = options()
                    .create_new(true)
                    .open(&path)
                    .map_err(write_error)?;
                // The new name is durable only once its directory is.
                sync_dir(&self.tables_dir).map_err(write_error)?;
                file
            }
            Err(e) => return Err(read_error(e)),
        };
        let mut records = Vec::new();
        let scanned = chain::scan(BufReader::new(&file), |record| {
            if keep {
                records.push(record);
            }
            Ok(())
        })
        .map_err(|e| match e {
            ScanError::Io(source) => read_error(source),
            ScanError::Line(bad) => StoreError::Corrupt {
                path: path.clone(),
                line: bad.line,
                reason: bad.problem,
            },
        })?;
        if scanned.torn {
            let size = file.metadata().map_err(read_error)?.len();
            tracing::warn!(
                table = %table,
                path = %path.display(),
                line = scanned.head.i + 1,
                bytes = size.saturating_sub(scanned.good_len),
                "cutting off a torn last line: a write a crash interrupted, never acknowledged"
            );
            let cut = file
                .set_len(scanned.good_len)
                .and_then(|()| file.sync_data());
            cut.map_err(|source| StoreError::Write {
                path: path.clone(),
                source,
            })?;
        }
        let log = TableLog {
            path,
            file,
            head: scanned.head,
            len: scanned.good_len,
        };
        Ok((log, records))
    }

    /// Writes and fdatasyncs each table's pending bytes (tables in parallel), then replies.
    fn commit(&mut self, mut round: Vec<Pending>) {
        if round.is_empty() {
            return;
        }
        let results: Vec<io::Result<()>> = if round.len() == 1 {
            round
                .iter_mut()
                .map(|p| self.write(&mut p.log, &p.bytes))
                .collect()
        } else {
            let per_thread = round.len().div_ceil(SYNC_THREADS);
            let this = &*self;
            thread::scope(|s| {
                let workers: Vec<_> = round
                    .chunks_mut(per_thread)
                    .map(|chunk| {
                        s.spawn(move || {
                            let w = |p: &mut Pending| this.write(&mut p.log, &p.bytes);
                            chunk.iter_mut().map(w).collect::<Vec<_>>()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| match w.join() {
                        Ok(results) => results,
                        // `write` does not panic; should it, fail its tables' appends.
                        Err(_) => vec![Err(io::Error::other("the sync thread panicked"))],
                    })
                    .collect()
            })
        };
        self.counters.rounds.fetch_add(1, Ordering::Relaxed);
        for (mut pending, result) in round.into_iter().zip(results) {
            match result {
                Ok(()) => {
                    pending.log.len += pending.bytes.len() as u64;
                    let c = &self.counters;
                    c.appends.fetch_add(pending.appends, Ordering::Relaxed);
                    c.records.fetch_add(pending.records, Ordering::Relaxed);
                    for waiter in pending.waiters {
                        let _ = waiter.send(Ok(()));
                    }
                    self.logs.insert(pending.table, pending.log);
                }
                Err(e) => {
                    tracing::error!(
                        table = %pending.table,
                        path = %pending.log.path.display(),
                        error = %e,
                        appends = pending.appends,
                        "append failed; the table's log is read again on its next use"
                    );
                    for waiter in pending.waiters {
                        let _ = waiter.send(Err(StoreError::Write {
                            path: pending.log.path.clone(),
                            source: io::Error::new(e.kind(), e.to_string()),
                        }));
                    }
                }
            }
        }
    }

    /// One write and one fdatasync; on failure, cuts the file back to its whole lines.
    fn write(&self, log: &mut TableLog, bytes: &[u8]) -> io::Result<()> {
        let result = log.file.write_all(bytes).and_then(|()| {
            self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
            log.file.sync_data()
        });
        if result.is_err() {
            let cut = log
                .file
                .set_len(log.len)
                .and_then(|()| log.file.sync_data());
            if let Err(e) = cut {
                tracing::error!(
                    path = %log.path.display(),
                    error = %e,
                    "cannot cut the log back after a failed append: its next load may read \
                     records whose append failed"
                );
            }
        }
        result
    }
}

mod replace;
#[cfg(test)]
mod tests;
