//! The log line format and its checks, shared by the writer, the loader and the auditor.
//!
//! A line is exactly `{"i":N,"prev":"<hex>","sha256":"<hex>","record":<record JSON>}\n`, with
//! `sha256 = SHA-256(prev || "\n" || record)` over the bytes as written. [`check_line`] accepts
//! only the bytes [`encode_line`] writes, so any change to a line is found: in the record by the
//! hash, in `prev` or `sha256` by the chain, elsewhere by the byte-for-byte comparison.
//!
//! The Redis log stores the same links as stream entry fields: [`next_link`] and [`check_entry`]
//! are the line-free halves of the same rules, and [`SeqCheck`] the event seq rule of both.

use crate::table::Record;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::io::{self, BufRead};

/// The `prev` of line 1: 64 zeros. Also the chain head of an empty log.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What is wrong with one line of a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    #[error(
        "the last line has no final newline: a write torn by a crash, never acknowledged \
         (the store cuts it off when it loads the log)"
    )]
    Torn,
    #[error("not a log line: {0}")]
    Json(String),
    #[error("i is {found}, expected {expected}: a line is missing, repeated or out of order")]
    Index { expected: u64, found: u64 },
    #[error(
        "prev is {found}, expected {expected} (the sha256 of the line before): a line before \
         it is missing or was changed"
    )]
    Prev { expected: String, found: String },
    #[error(
        "sha256 is {found}, but prev and record hash to {expected}: the record or its hash \
         was changed"
    )]
    Hash { expected: String, found: String },
    #[error("the line is not byte for byte what the store writes: it was changed")]
    NotCanonical,
    #[error("the record is not a tablecast record: {0}")]
    Record(String),
    #[error("event seq {found}, expected {expected}: an event is missing or repeated")]
    Seq { expected: u64, found: u64 },
    /// A Redis stream entry that is not shaped as tablecast writes it (its id, its fields).
    #[error("not a tablecast log entry: {0}")]
    Entry(String),
}

/// Where a chain stands: the `i` and `sha256` of its last line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub i: u64,
    pub hash: String,
}

impl Head {
    pub fn genesis() -> Self {
        Self {
            i: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }
}

/// `SHA-256(prev || "\n" || record)`, lowercase hex.
fn line_hash(prev: &str, record_json: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(record_json.as_bytes());
    hex::encode(h.finalize())
}

/// Appends to `out` the line of `record_json` (a `Record` as `serde_json::to_string` writes
/// it: one line, no newline inside) after `head`, and moves `head` to it.
pub fn encode_line(head: &mut Head, record_json: &str, out: &mut Vec<u8>) {
    let link = next_link(head, record_json);
    write_line(out, link.i, &link.prev, &link.sha256, record_json);
    out.push(b'\n');
}

fn write_line(out: &mut Vec<u8>, i: u64, prev: &str, sha256: &str, record_json: &str) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        r#"{{"i":{i},"prev":"{prev}","sha256":"{sha256}","record":{record_json}}}"#
    );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine<'a> {
    i: u64,
    prev: &'a str,
    sha256: &'a str,
    #[serde(borrow)]
    record: &'a RawValue,
}

/// Checks `line` (without its `\n`) as the line after `head`; on success returns its record
/// and moves `head` to it.
pub fn check_line(head: &mut Head, line: &[u8]) -> Result<Record, LineProblem> {
    let raw: RawLine =
        serde_json::from_slice(line).map_err(|e| LineProblem::Json(e.to_string()))?;
    let record_json = raw.record.get();
    let hash = check_link(head, raw.i, raw.prev, raw.sha256, record_json)?;
    let mut canonical = Vec::with_capacity(line.len());
    write_line(&mut canonical, raw.i, raw.prev, raw.sha256, record_json);
    if canonical != line {
        return Err(LineProblem::NotCanonical);
    }
    let record = parse_record(record_json)?;
    *head = Head { i: raw.i, hash };
    Ok(record)
}

/// One link of a chain as stored elsewhere than in a line (a Redis stream entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub i: u64,
    pub prev: String,
    pub sha256: String,
}

/// The link of `record_json` after `head`, and moves `head` to it (the writer's side of
/// [`check_entry`]).
pub fn next_link(head: &mut Head, record_json: &str) -> Link {
    let i = head.i + 1;
    let sha256 = line_hash(&head.hash, record_json);
    let link = Link {
        i,
        prev: std::mem::replace(&mut head.hash, sha256.clone()),
        sha256,
    };
    head.i = i;
    link
}

/// Checks an entry stored as separate fields (`i`, `prev`, `sha256`, record JSON) as the one
/// after `head`, with the rules of [`check_line`] but for the byte layout of a line; on success
/// returns its record and moves `head` to it.
pub fn check_entry(
    head: &mut Head,
    i: u64,
    prev: &str,
    sha256: &str,
    record_json: &str,
) -> Result<Record, LineProblem> {
    let hash = check_link(head, i, prev, sha256, record_json)?;
    let record = parse_record(record_json)?;
    *head = Head { i, hash };
    Ok(record)
}

/// Checks `i`, `prev` and `sha256` against `head`; returns the hash.
fn check_link(
    head: &Head,
    i: u64,
    prev: &str,
    sha256: &str,
    record_json: &str,
) -> Result<String, LineProblem> {
    let expected = head.i + 1;
    if i != expected {
        return Err(LineProblem::Index { expected, found: i });
    }
    if prev != head.hash {
        return Err(LineProblem::Prev {
            expected: head.hash.clone(),
            found: prev.to_owned(),
        });
    }
    let hash = line_hash(prev, record_json);
    if sha256 != hash {
        return Err(LineProblem::Hash {
            expected: hash,
            found: sha256.to_owned(),
        });
    }
    Ok(hash)
}

fn parse_record(record_json: &str) -> Result<Record, LineProblem> {
    serde_json::from_str(record_json).map_err(|e| LineProblem::Record(e.to_string()))
}

/// The event seq rule: public events carry seq 1, 2, 3 … in log order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqCheck {
    /// `Record::Event`s seen.
    pub events: u64,
    /// The seq of the last one (0: none).
    pub last_seq: u64,
}

impl SeqCheck {
    /// Checks the next record of the log.
    pub fn check(&mut self, record: &Record) -> Result<(), LineProblem> {
        if let Record::Event(event) = record {
            let expected = self.last_seq + 1;
            if event.seq != expected {
                return Err(LineProblem::Seq {
                    expected,
                    found: event.seq,
                });
            }
            self.events += 1;
            self.last_seq = event.seq;
        }
        Ok(())
    }
}

/// The first bad line of a log: its line number, the `i` it should have had, and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: u64,
    pub i: u64,
    pub problem: LineProblem,
}

#[derive(Debug)]
pub enum ScanError {
    Io(io::Error),
    Line(BadLine),
}

/// A log read up to its end, or up to a torn last line.
#[derive(Debug)]
pub struct Scanned {
    pub head: Head,
    /// Bytes of whole, good lines: the length to cut the file to if `torn`.
    pub good_len: u64,
    /// The last line has no `\n`; it is not counted in `head` or `good_len`.
    pub torn: bool,
}

/// Reads a log from the start, checking each line and handing its record to `each` (which can
/// refuse it, e.g. for a seq gap). Stops at the first bad line. A torn last line is not an
/// error here: the caller decides (load cuts it off, audit refuses it).
pub fn scan(
    mut reader: impl BufRead,
    mut each: impl FnMut(Record) -> Result<(), LineProblem>,
) -> Result<Scanned, ScanError> {
    let mut head = Head::genesis();
    let mut good_len = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(ScanError::Io)?;
        if n == 0 {
            return Ok(Scanned {
                head,
                good_len,
                torn: false,
            });
        }
        let Some(line) = buf.strip_suffix(b"\n") else {
            return Ok(Scanned {
                head,
                good_len,
                torn: true,
            });
        };
        let bad = |head: &Head, problem| {
            ScanError::Line(BadLine {
                line: head.i + 1,
                i: head.i + 1,
                problem,
            })
        };
        let record = match check_line(&mut head, line) {
            Ok(record) => record,
            Err(problem) => return Err(bad(&head, problem)),
        };
        good_len += n as u64;
        // `check_line` moved `head` to this line; report a refusal against it.
        each(record).map_err(|problem| {
            ScanError::Line(BadLine {
                line: head.i,
                i: head.i,
                problem,
            })
        })?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{event, mute};

    fn log_of(records: &[Record]) -> Vec<u8> {
        let mut head = Head::genesis();
        let mut out = Vec::new();
        for r in records {
            encode_line(&mut head, &serde_json::to_string(r).unwrap(), &mut out);
        }
        out
    }

    #[test]
    fn the_first_line_is_chained_to_zeros_and_hashes_prev_newline_record() {
        let record = mute(1, 2);
        let json = serde_json::to_string(&record).unwrap();
        let text = String::from_utf8(log_of(std::slice::from_ref(&record))).unwrap();
        let expected = hex::encode(Sha256::digest(format!("{GENESIS_HASH}\n{json}")));
        assert_eq!(
            text,
            format!(
                "{{\"i\":1,\"prev\":\"{GENESIS_HASH}\",\"sha256\":\"{expected}\",\"record\":{json}}}\n"
            )
        );
    }

    #[test]
    fn a_written_log_scans_back_to_its_records() {
        let records = vec![event(1), mute(0, 1), event(2)];
        let bytes = log_of(&records);
        let mut seen = vec![];
        let scanned = scan(&bytes[..], |r| {
            seen.push(r);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, records);
        assert_eq!(scanned.head.i, 3);
        assert_eq!(scanned.good_len, bytes.len() as u64);
        assert!(!scanned.torn);
    }

    #[test]
    fn an_upper_case_hash_is_not_the_hash() {
        let bytes = log_of(&[mute(0, 1)]);
        let text = String::from_utf8(bytes).unwrap();
        let start = text.find("\"sha256\":\"").unwrap() + 10;
        let hash = &text[start..start + 64];
        let changed = text.replacen(hash, &hash.to_uppercase(), 1);
        assert!(changed != text);
        let e = scan(changed.as_bytes(), |_| Ok(())).unwrap_err();
        assert!(
            matches!(
                e,
                ScanError::Line(BadLine {
                    line: 1,
                    problem: LineProblem::Hash { .. },
                    ..
                })
            ),
            "{e:?}"
        );
    }

    #[test]
    fn whitespace_the_store_never_writes_is_refused() {
        let text = String::from_utf8(log_of(&[mute(0, 1)])).unwrap();
        let changed = text.replacen(",\"prev\"", ", \"prev\"", 1);
        let e = scan(changed.as_bytes(), |_| Ok(())).unwrap_err();
        assert!(
            matches!(
                e,
                ScanError::Line(BadLine {
                    problem: LineProblem::NotCanonical,
                    ..
                })
            ),
            "{e:?}"
        );
    }
}
