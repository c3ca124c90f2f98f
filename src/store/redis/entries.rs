//! The Redis side of a table's log: reading stream entries out of untrusted replies, checking
//! them against the chain, and the Lua script that appends (fence check, order check, `XADD`s)
//! in one step.

use crate::store::chain::{self, Head, LineProblem};
use crate::table::Record;
use redis::{Script, Value};
use std::sync::LazyLock;

/// `KEYS[1]`: the table's owner key, `KEYS[2]`: its log stream. `ARGV[1]`: the caller's fence,
/// `ARGV[2]`: the `i` of the last entry the caller expects (0: none), then four arguments per
/// entry: `i`, `prev`, `sha256`, `record`.
///
/// Returns `{"ok", ""}`, `{"fenced", <owner value>}` or `{"moved", <last stream id>}`, and
/// appends nothing unless `ok`. The first `XADD` is the only one that can meet an id at or
/// after its own (entries deleted at the tail): it is run with `pcall` and reported as `moved`,
/// so a refused append never leaves half a batch.
const APPEND_LUA: &str = r"
local owner = redis.call('GET', KEYS[1])
local prefix = ARGV[1] .. ':'
if (not owner) or string.sub(owner, 1, #prefix) ~= prefix then
  return {'fenced', owner or ''}
end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local found = '0'
if #last > 0 then found = last[1][1] end
local expected = '0'
if ARGV[2] ~= '0' then expected = ARGV[2] .. '-0' end
if found ~= expected then
  return {'moved', found}
end
for j = 3, #ARGV, 4 do
  local added = redis.pcall('XADD', KEYS[2], ARGV[j] .. '-0', 'prev', ARGV[j + 1],
    'sha256', ARGV[j + 2], 'record', ARGV[j + 3], 'fence', ARGV[1])
  if type(added) == 'table' and added.err then
    if j == 3 then return {'moved', found} end
    return redis.error_reply(added.err)
  end
end
return {'ok', ''}
";

/// The append script (sent by its SHA1, loaded on first use).
pub(super) static APPEND: LazyLock<Script> = LazyLock::new(|| Script::new(APPEND_LUA));

/// What the append script did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Appended,
    /// The owner key does not carry the caller's fence: its value (empty: no owner).
    Fenced {
        owner: String,
    },
    /// The stream's last entry is not the one the caller chained to: its id (`0`: empty).
    Moved {
        last: String,
    },
}

/// Reads the script's reply; an error text for anything it does not return.
pub(super) fn outcome(reply: &[String]) -> Result<Outcome, String> {
    match reply {
        [tag, _] if tag == "ok" => Ok(Outcome::Appended),
        [tag, owner] if tag == "fenced" => Ok(Outcome::Fenced {
            owner: owner.clone(),
        }),
        [tag, last] if tag == "moved" => Ok(Outcome::Moved { last: last.clone() }),
        other => Err(format!(
            "unexpected reply from the append script: {other:?}"
        )),
    }
}

/// One stream entry as Redis returned it, not yet checked.
#[derive(Debug)]
pub(super) struct Entry {
    pub id: String,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The field names every entry has, exactly once each, and no other.
const FIELDS: [&str; 4] = ["prev", "sha256", "record", "fence"];

/// The entries of an `XRANGE` or `XREVRANGE` reply.
pub(super) fn parse_range(reply: Value) -> Result<Vec<Entry>, LineProblem> {
    let Value::Array(items) = reply else {
        return Err(shape("the reply is not an array of entries"));
    };
    items.into_iter().map(parse_entry).collect()
}

fn parse_entry(item: Value) -> Result<Entry, LineProblem> {
    let Value::Array(parts) = item else {
        return Err(shape("an entry is not an [id, fields] pair"));
    };
    let mut parts = parts.into_iter();
    let (Some(id), Some(fields), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(shape("an entry is not an [id, fields] pair"));
    };
    let id = String::from_utf8(bytes(id).ok_or_else(|| shape("an entry id is not text"))?)
        .map_err(|_| shape("an entry id is not UTF-8"))?;
    let fields = match fields {
        Value::Array(flat) => {
            if flat.len() % 2 != 0 {
                return Err(shape("an entry has a field without a value"));
            }
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                pairs.push((name, value));
            }
            pairs
        }
        Value::Map(pairs) => pairs,
        _ => return Err(shape("an entry's fields are not a list")),
    };
    let fields = fields
        .into_iter()
        .map(|(name, value)| match (bytes(name), bytes(value)) {
            (Some(name), Some(value)) => Ok((name, value)),
            _ => Err(shape("a field name or value is not a string")),
        })
        .collect::<Result<_, _>>()?;
    Ok(Entry { id, fields })
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        _ => None,
    }
}

fn shape(what: &str) -> LineProblem {
    LineProblem::Entry(what.to_owned())
}

impl Entry {
    /// The `i` of an id `<i>-0`.
    pub fn index(&self) -> Result<u64, LineProblem> {
        self.id
            .strip_suffix("-0")
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| LineProblem::Entry(format!("stream id {} is not <i>-0", self.id)))
    }

    /// The value of field `name`, as text; an error unless it is there exactly once.
    pub fn field(&self, name: &str) -> Result<&str, LineProblem> {
        let mut values = self
            .fields
            .iter()
            .filter(|(n, _)| n.as_slice() == name.as_bytes());
        match (values.next(), values.next()) {
            (Some((_, value)), None) => std::str::from_utf8(value)
                .map_err(|_| LineProblem::Entry(format!("field {name} is not UTF-8"))),
            (None, _) => Err(LineProblem::Entry(format!("field {name} is missing"))),
            (Some(_), Some(_)) => Err(LineProblem::Entry(format!("field {name} is repeated"))),
        }
    }

    /// Checks the entry as the one after `head` (id, fields, chain, record); on success returns
    /// its record and moves `head` to it.
    pub fn check(&self, head: &mut Head) -> Result<Record, LineProblem> {
        let i = self.index()?;
        if let Some((name, _)) = self
            .fields
            .iter()
            .find(|(n, _)| !FIELDS.iter().any(|f| f.as_bytes() == n.as_slice()))
        {
            let name = String::from_utf8_lossy(name);
            return Err(LineProblem::Entry(format!("unknown field {name:?}")));
        }
        let fence = self.field("fence")?;
        if fence.parse::<u64>().is_err() {
            return Err(LineProblem::Entry(format!(
                "fence {fence:?} is not a number"
            )));
        }
        let (prev, sha256, record) = (
            self.field("prev")?,
            self.field("sha256")?,
            self.field("record")?,
        );
        chain::check_entry(head, i, prev, sha256, record)
    }

    /// The chain head this entry ends, trusting its fields (for an append after it; a full
    /// load checks them).
    pub fn head(&self) -> Result<Head, LineProblem> {
        let i = self.index()?;
        let hash = self.field("sha256")?;
        let is_hash =
            hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !is_hash {
            return Err(LineProblem::Entry(format!(
                "sha256 {hash:?} is not 64 hex digits"
            )));
        }
        Ok(Head {
            i,
            hash: hash.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::mute;

    fn entry(id: &str, fields: &[(&str, &str)]) -> Value {
        let flat = fields
            .iter()
            .flat_map(|(n, v)| [n, v])
            .map(|s| Value::BulkString(s.as_bytes().to_vec()))
            .collect();
        Value::Array(vec![
            Value::BulkString(id.as_bytes().to_vec()),
            Value::Array(flat),
        ])
    }

    fn first_entry(head: &mut Head, record_json: &str) -> Value {
        let link = chain::next_link(head, record_json);
        entry(
            &format!("{}-0", link.i),
            &[
                ("prev", &link.prev),
                ("sha256", &link.sha256),
                ("record", record_json),
                ("fence", "3"),
            ],
        )
    }

    #[test]
    fn a_written_entry_checks_back_to_its_record() {
        let json = serde_json::to_string(&mute(0, 1)).unwrap();
        let value = first_entry(&mut Head::genesis(), &json);
        let entries = parse_range(Value::Array(vec![value])).unwrap();
        let mut head = Head::genesis();
        assert_eq!(entries[0].check(&mut head).unwrap(), mute(0, 1));
        assert_eq!(head, entries[0].head().unwrap());
    }

    #[test]
    fn ids_other_than_i_dash_0_are_refused() {
        for id in ["1-1", "1", "-0", "x-0", "+1-0"] {
            let e = Entry {
                id: id.to_owned(),
                fields: vec![],
            };
            assert!(matches!(e.index(), Err(LineProblem::Entry(_))), "{id}");
        }
    }

    #[test]
    fn a_missing_or_extra_field_is_named() {
        let json = serde_json::to_string(&mute(0, 1)).unwrap();
        let mut head = Head::genesis();
        let link = chain::next_link(&mut head, &json);
        let fields = [
            ("prev", link.prev.as_str()),
            ("sha256", &link.sha256),
            ("record", &json),
        ];
        let missing = parse_range(Value::Array(vec![entry("1-0", &fields)])).unwrap();
        let problem = missing[0].check(&mut Head::genesis()).unwrap_err();
        assert!(
            problem.to_string().contains("fence is missing"),
            "{problem}"
        );
        let mut more = fields.to_vec();
        more.extend([("fence", "1"), ("note", "x")]);
        let extra = parse_range(Value::Array(vec![entry("1-0", &more)])).unwrap();
        let problem = extra[0].check(&mut Head::genesis()).unwrap_err();
        assert!(problem.to_string().contains("\"note\""), "{problem}");
    }

    #[test]
    fn replies_of_another_shape_are_errors_not_panics() {
        for reply in [
            Value::Nil,
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Array(vec![Value::Nil])]),
            entry("1-0", &[("prev", "x")]),
        ] {
            assert!(parse_range(reply.clone()).is_err(), "{reply:?}");
        }
        assert!(outcome(&["maybe".to_owned()]).is_err());
        assert_eq!(
            outcome(&["fenced".to_owned(), "4:b".to_owned()]),
            Ok(Outcome::Fenced {
                owner: "4:b".to_owned()
            })
        );
    }
}
