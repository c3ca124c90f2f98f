//! `tablecast audit verify PATH`: a strict check of one table's log file.
//!
//! Every line must be exactly what the store writes, chained to the line before (`i` from 1
//! with no gap, `prev` equal to the previous `sha256`, `sha256` recomputing), and hold a
//! tablecast [`Record`](crate::table::Record); public events must have `seq` 1, 2, 3 … A torn last line is an error
//! here, although loading the log into a store repairs it.

use super::chain::{self, LineProblem, ScanError, SeqCheck};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

/// What a good log holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    pub records: u64,
    /// `Record::Event` lines.
    pub events: u64,
    /// The seq of the last event (0: none).
    pub last_seq: u64,
    /// The `sha256` of the last line: the chain head ([`GENESIS_HASH`](super::GENESIS_HASH) for an empty log).
    pub last_hash: String,
}

impl fmt::Display for AuditReport {
    /// `1234 records, 567 events, last seq 567, chain head <hash>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} records, {} events, last seq {}, chain head {}",
            self.records, self.events, self.last_seq, self.last_hash
        )
    }
}

/// Why a log failed the audit: it names the first bad line. The message leaves out the path
/// (print it before: `{path}: {error}`).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot read the file: {source}: check the path and its permissions")]
    Read { path: PathBuf, source: io::Error },
    /// `i` is the number the line should have had in the chain.
    #[error("line {line} (record i={i}): {problem}")]
    Line {
        path: PathBuf,
        line: u64,
        i: u64,
        problem: LineProblem,
    },
}

/// Checks every line of the log file at `path`. See the module doc.
pub fn verify(path: &Path) -> Result<AuditReport, AuditError> {
    let read_error = |source| AuditError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let mut seqs = SeqCheck::default();
    let scanned =
        chain::scan(BufReader::new(file), |record| seqs.check(&record)).map_err(|e| match e {
            ScanError::Io(source) => read_error(source),
            ScanError::Line(bad) => AuditError::Line {
                path: path.to_owned(),
                line: bad.line,
                i: bad.i,
                problem: bad.problem,
            },
        })?;
    if scanned.torn {
        let next = scanned.head.i + 1;
        return Err(AuditError::Line {
            path: path.to_owned(),
            line: next,
            i: next,
            problem: LineProblem::Torn,
        });
    }
    Ok(AuditReport {
        records: scanned.head.i,
        events: seqs.events,
        last_seq: seqs.last_seq,
        last_hash: scanned.head.hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{TempDir, event, mute, table};
    use crate::store::{EventStore, Fence, FileStore, GENESIS_HASH};
    use crate::table::Record;

    /// A log written by a real `FileStore`, and its path.
    async fn written(dir: &TempDir, records: Vec<Record>) -> PathBuf {
        let store = FileStore::open(&dir.0).unwrap();
        let t = table("audited");
        for r in records {
            store.append(&t, Fence::LOCAL, vec![r]).await.unwrap();
        }
        store.log_path(&t)
    }

    fn line_of(e: &AuditError) -> (u64, &LineProblem) {
        match e {
            AuditError::Line { line, problem, .. } => (*line, problem),
            AuditError::Read { .. } => panic!("expected a bad line, got {e}"),
        }
    }

    #[tokio::test]
    async fn a_good_log_passes_and_is_summed_up() {
        let dir = TempDir::new("audit-good");
        let path = written(&dir, vec![event(1), mute(0, 1), event(2)]).await;
        let report = verify(&path).unwrap();
        assert_eq!((report.records, report.events, report.last_seq), (3, 2, 2));
        let last = std::fs::read_to_string(&path).unwrap();
        let last = last.lines().last().unwrap();
        assert!(last.contains(&format!("\"sha256\":\"{}\"", report.last_hash)));
        assert!(
            report
                .to_string()
                .starts_with("3 records, 2 events, last seq 2, chain head ")
        );
    }

    #[tokio::test]
    async fn an_empty_log_passes_with_the_genesis_head() {
        let dir = TempDir::new("audit-empty");
        let store = FileStore::open(&dir.0).unwrap();
        let t = table("empty");
        assert!(store.load(&t).await.unwrap().is_empty());
        let report = verify(&store.log_path(&t)).unwrap();
        assert_eq!(report.records, 0);
        assert_eq!(report.last_hash, GENESIS_HASH);
    }

    #[tokio::test]
    async fn changing_any_single_byte_fails_naming_a_line() {
        let dir = TempDir::new("audit-flip");
        let path = written(&dir, vec![event(1), mute(0, 1), event(2)]).await;
        let good = std::fs::read(&path).unwrap();
        let line_starts: Vec<usize> = std::iter::once(0)
            .chain(
                good.iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        let mut checked = 0;
        for pos in 0..good.len() {
            // The line the byte is on (a `\n` belongs to the line it ends).
            let line = line_starts.iter().filter(|s| **s <= pos).count() as u64;
            for mask in [0x01u8, 0x20, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[pos] ^= mask;
                std::fs::write(&path, &bad).unwrap();
                let e = verify(&path).expect_err(&format!("byte {pos} ^ {mask:#x} passed"));
                assert_eq!(line_of(&e).0, line, "byte {pos} ^ {mask:#x}: {e}");
                checked += 1;
            }
        }
        assert_eq!(checked, good.len() * 4);
    }

    #[tokio::test]
    async fn a_deleted_middle_line_fails_at_its_place() {
        let dir = TempDir::new("audit-gap");
        let path = written(&dir, vec![event(1), mute(0, 1), event(2)]).await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        let e = verify(&path).unwrap_err();
        assert_eq!(
            line_of(&e),
            (
                2,
                &LineProblem::Index {
                    expected: 2,
                    found: 3
                }
            )
        );
        assert!(
            e.to_string()
                .starts_with("line 2 (record i=2): i is 3, expected 2: "),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_seq_gap_fails_although_the_chain_is_sound() {
        let dir = TempDir::new("audit-seq");
        let path = written(&dir, vec![event(1), mute(0, 1), event(3)]).await;
        let e = verify(&path).unwrap_err();
        assert_eq!(
            line_of(&e),
            (
                3,
                &LineProblem::Seq {
                    expected: 2,
                    found: 3
                }
            )
        );
    }

    #[tokio::test]
    async fn a_changed_record_names_the_expected_and_found_hash() {
        let dir = TempDir::new("audit-hash");
        let path = written(&dir, vec![event(1), mute(0, 1)]).await;
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replacen("\"muted\":false", "\"muted\":true ", 1),
        )
        .unwrap();
        let e = verify(&path).unwrap_err();
        let (line, problem) = line_of(&e);
        assert_eq!(line, 2);
        let LineProblem::Hash { expected, found } = problem else {
            panic!("{e}");
        };
        assert!(
            expected != found && e.to_string().contains(found.as_str()),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_torn_last_line_fails_the_audit() {
        let dir = TempDir::new("audit-torn");
        let path = written(&dir, vec![event(1), event(2)]).await;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&path, &bytes).unwrap();
        let e = verify(&path).unwrap_err();
        assert_eq!(line_of(&e), (2, &LineProblem::Torn));
    }

    #[test]
    fn a_missing_file_says_so() {
        let e = verify(Path::new("/nonexistent/tablecast/x.log")).unwrap_err();
        assert!(matches!(e, AuditError::Read { .. }), "{e}");
    }
}
