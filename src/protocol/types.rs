//! Small value types shared by the wire messages and the table core: server time, spot ids,
//! payout odds, outcomes and bet amounts as they arrive from a client.

use crate::ids::InvalidId;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// The largest amount, in minor units, that tablecast accepts anywhere: 2^53 - 1, the largest
/// integer a JavaScript client reads back exactly.
pub const MAX_AMOUNT: u64 = 9_007_199_254_740_991;

/// Server time in milliseconds since the Unix epoch.
///
/// The table core never reads a clock: the caller passes `ServerTime` in, which keeps the core
/// deterministic and lets snapshots state `closes_at_server_ms` exactly.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServerTime(pub u64);

impl ServerTime {
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + ms`, saturating at the end of time rather than wrapping.
    pub const fn plus_millis(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// `self + secs`, saturating.
    pub const fn plus_secs(self, secs: u32) -> Self {
        self.plus_millis((secs as u64).saturating_mul(1000))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub const fn millis_since(self, earlier: ServerTime) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Debug for ServerTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

impl fmt::Display for ServerTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A bet spot of a table (`player`, `banker`, `tie` …). Same character rules as the ids in
/// `crate::ids`.
// TODO(ids): move into `crate::ids` as `string_id!(SpotId, "spot id")` and re-export here.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpotId(String);

impl SpotId {
    /// Validates a spot id from outside (config, wire): 1 to 64 of `A-Z a-z 0-9 - _ .`.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        let ok = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidId {
                kind: "spot id",
                value: value.chars().take(80).collect(),
                max: 64,
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SpotId {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, InvalidId> {
        Self::parse(&value)
    }
}

impl From<SpotId> for String {
    fn from(id: SpotId) -> String {
        id.0
    }
}

impl fmt::Display for SpotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SpotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpotId({})", self.0)
    }
}

/// Why a payout ratio was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid odds {0:?}: write them as \"NUM:DEN\" with whole numbers and DEN > 0, e.g. \"1:1\", \"19:20\", \"8:1\""
)]
pub struct InvalidOdds(pub String);

/// Payout odds `num:den`: a winning stake `s` wins `floor(s * num / den)` on top of the stake
/// coming back. Baccarat: player `1:1`, banker `19:20` (0.95:1), tie `8:1`.
///
/// Written in config and on the wire as the string `"num:den"`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Odds {
    pub num: u32,
    pub den: u32,
}

impl Odds {
    /// Odds with a non-zero denominator.
    pub fn new(num: u32, den: u32) -> Result<Self, InvalidOdds> {
        if den == 0 {
            return Err(InvalidOdds(format!("{num}:{den}")));
        }
        Ok(Self { num, den })
    }

    /// The winnings on `stake` (not counting the stake itself), rounded down to a whole minor
    /// unit: the house keeps the fraction. Computed in `u128`, so it cannot overflow; the result
    /// saturates at `u64::MAX`, which config validation keeps out of reach (see
    /// `TableConfig::validate`).
    pub fn winnings(self, stake: u64) -> u64 {
        let den = u128::from(self.den.max(1));
        let w = u128::from(stake) * u128::from(self.num) / den;
        u64::try_from(w).unwrap_or(u64::MAX)
    }
}

impl TryFrom<String> for Odds {
    type Error = InvalidOdds;
    fn try_from(value: String) -> Result<Self, InvalidOdds> {
        let bad = || InvalidOdds(value.chars().take(40).collect());
        let (n, d) = value.split_once(':').ok_or_else(bad)?;
        let num = n.trim().parse::<u32>().map_err(|_| bad())?;
        let den = d.trim().parse::<u32>().map_err(|_| bad())?;
        Odds::new(num, den).map_err(|_| bad())
    }
}

impl From<Odds> for String {
    fn from(o: Odds) -> String {
        format!("{}:{}", o.num, o.den)
    }
}

/// The result of a round: the spots that won. Baccarat has exactly one (`["banker"]`).
///
/// Serialized as a JSON array; a single string (`"banker"`) is accepted on the way in.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[serde(transparent)]
pub struct Outcome(pub Vec<SpotId>);

impl Outcome {
    pub fn single(spot: SpotId) -> Self {
        Self(vec![spot])
    }

    pub fn contains(&self, spot: &SpotId) -> bool {
        self.0.contains(spot)
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(SpotId),
            Many(Vec<SpotId>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => Outcome(vec![s]),
            OneOrMany::Many(v) => Outcome(v),
        })
    }
}

/// A bet amount exactly as the client sent it: any JSON number. The table core decides whether
/// it is a positive integer, so a bad amount earns a `bet.rejected` carrying the bet's id rather
/// than an anonymous parse error.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WireAmount(pub serde_json::Number);

impl WireAmount {
    /// The amount in minor units if it is a positive integer, else `None`.
    pub fn minor_units(&self) -> Option<u64> {
        self.0.as_u64().filter(|&n| n > 0)
    }
}

impl From<u64> for WireAmount {
    fn from(n: u64) -> Self {
        Self(serde_json::Number::from(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odds_parse_from_num_colon_den_and_refuse_a_zero_denominator() {
        let o: Odds = serde_json::from_str("\"19:20\"").unwrap();
        assert_eq!(o, Odds { num: 19, den: 20 });
        assert_eq!(serde_json::to_string(&o).unwrap(), "\"19:20\"");
        assert!(serde_json::from_str::<Odds>("\"1:0\"").is_err());
        assert!(serde_json::from_str::<Odds>("\"0.95:1\"").is_err());
        assert!(serde_json::from_str::<Odds>("\"2\"").is_err());
    }

    #[test]
    fn winnings_round_down_to_a_whole_minor_unit() {
        let banker = Odds::new(19, 20).unwrap();
        assert_eq!(banker.winnings(100), 95);
        assert_eq!(banker.winnings(5), 4); // 4.75 → 4
        assert_eq!(banker.winnings(1), 0); // 0.95 → 0
        assert_eq!(
            Odds::new(8, 1).unwrap().winnings(MAX_AMOUNT / 8),
            MAX_AMOUNT / 8 * 8
        );
        assert_eq!(Odds::new(u32::MAX, 1).unwrap().winnings(u64::MAX), u64::MAX);
    }

    #[test]
    fn outcome_accepts_a_single_spot_or_a_list_and_writes_a_list() {
        let one: Outcome = serde_json::from_str("\"banker\"").unwrap();
        let many: Outcome = serde_json::from_str("[\"banker\"]").unwrap();
        assert_eq!(one, many);
        assert_eq!(serde_json::to_string(&one).unwrap(), "[\"banker\"]");
        assert!(serde_json::from_str::<Outcome>("\"no spot\"").is_err());
    }

    #[test]
    fn wire_amount_is_minor_units_only_when_a_positive_integer() {
        let amt = |s: &str| serde_json::from_str::<WireAmount>(s).unwrap().minor_units();
        assert_eq!(amt("100"), Some(100));
        assert_eq!(amt("0"), None);
        assert_eq!(amt("-5"), None);
        assert_eq!(amt("10.5"), None);
        assert_eq!(amt("1e3"), None);
    }
}
