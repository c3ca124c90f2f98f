//! `FileStore::replace`: a table's log rewritten whole, for a node whose local copy must
//! become a mirror of the cluster's log again ([`crate::store::SpooledStore`]).
//!
//! The writer thread does it between rounds: the new log goes to `{table}.log.tmp` (fsynced),
//! the old one is kept under a second name (a hard link, `{table}.log.diverged-<unix ms>`),
//! then the temp file is renamed over the log and the directory fsynced. A crash at any point
//! leaves either the old log or the new one in place, never a mix.

use super::{FileStore, Pending, Request, Writer, log_path, sync_dir};
use crate::ids::TableId;
use crate::store::StoreError;
use crate::store::chain::{self, Head};
use crate::table::Record;
use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

impl FileStore {
    /// Replaces `table`'s log with one holding exactly `records`, atomically. The old log, if
    /// there was one, is kept beside it as `{table}.log.diverged-<unix ms>`, whose path this
    /// returns. Appends queued before are written to the old log first.
    pub async fn replace(
        &self,
        table: &TableId,
        records: &[Record],
    ) -> Result<Option<PathBuf>, StoreError> {
        let records = records
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| StoreError::Encode {
                table: table.clone(),
                source,
            })?;
        let (reply, answer) = oneshot::channel();
        self.send(Request::Replace {
            table: table.clone(),
            records,
            reply,
        })?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }
}

impl Writer {
    /// Commits `table`'s appends of the round in progress now, ahead of the round (for a
    /// request that reads or rewrites the file).
    pub(super) fn commit_table(&mut self, table: &TableId, round: &mut Vec<Pending>) {
        if let Some(at) = round.iter().position(|p| &p.table == table) {
            let pending = round.swap_remove(at);
            self.commit(vec![pending]);
        }
    }

    /// See the module doc. Forgets the table's open log: the next request reads the new one.
    pub(super) fn replace(
        &mut self,
        table: &TableId,
        records: &[String],
    ) -> Result<Option<PathBuf>, StoreError> {
        self.logs.remove(table);
        let path = log_path(&self.tables_dir, table);
        let tmp = self.tables_dir.join(format!("{table}.log.tmp"));
        let mut bytes = Vec::new();
        let mut head = Head::genesis();
        for json in records {
            chain::encode_line(&mut head, json, &mut bytes);
        }
        let write_error = |path: &PathBuf| {
            let path = path.clone();
            move |source| StoreError::Write { path, source }
        };
        let mut file = File::create(&tmp).map_err(write_error(&tmp))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(write_error(&tmp))?;
        drop(file);
        let aside = if path.exists() {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let aside = self.tables_dir.join(format!("{table}.log.diverged-{ms}"));
            fs::hard_link(&path, &aside).map_err(write_error(&aside))?;
            Some(aside)
        } else {
            None
        };
        fs::rename(&tmp, &path).map_err(write_error(&path))?;
        sync_dir(&self.tables_dir).map_err(write_error(&self.tables_dir))?;
        Ok(aside)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::test_support::{TempDir, event, mute, table};
    use crate::store::{EventStore, Fence, FileStore};

    #[tokio::test]
    async fn replace_keeps_the_old_log_aside_and_appends_continue_the_new_one() {
        let dir = TempDir::new("replace");
        let store = FileStore::open(&dir.0).unwrap();
        let t = table("replaced");
        store
            .append(&t, Fence::LOCAL, vec![event(1), mute(0, 1)])
            .await
            .unwrap();
        let old = std::fs::read(store.log_path(&t)).unwrap();
        let aside = store.replace(&t, &[event(1)]).await.unwrap().unwrap();
        assert_eq!(std::fs::read(&aside).unwrap(), old);
        assert!(aside.to_string_lossy().contains("replaced.log.diverged-"));
        store
            .append(&t, Fence::LOCAL, vec![event(2)])
            .await
            .unwrap();
        assert_eq!(store.load(&t).await.unwrap(), vec![event(1), event(2)]);
        let fresh = table("fresh");
        assert_eq!(store.replace(&fresh, &[mute(1, 1)]).await.unwrap(), None);
        assert_eq!(store.load(&fresh).await.unwrap(), vec![mute(1, 1)]);
    }
}
