//! `TableConfig`: one `[[tables]]` entry of `config.toml`. It is also what clients see of a
//! table in `welcome` (spots, odds, limits, currency), which is why it lives with the wire types.
//!
//! ```toml
//! [[tables]]
//! id = "demo"
//! name = "Demo Baccarat"
//! betting_window_secs = 15
//! currency = "EUR"
//! auto_open_pause_secs = 5      # optional: open the next round by itself after this pause
//! totals_interval_ms = 200      # optional, default 200
//!
//! [[tables.spots]]
//! id = "player"
//! odds = "1:1"
//! min_bet = 100                 # minor units (cents)
//! max_bet = 100000
//! max_per_player_round = 200000
//! push_on = ["tie"]             # a losing bet here is returned when `tie` wins
//! ```

use super::types::{MAX_AMOUNT, Odds, SpotId};
use crate::ids::TableId;
use serde::{Deserialize, Serialize};

/// Default for `totals_interval_ms`: at most five `totals` events per second per table.
pub const DEFAULT_TOTALS_INTERVAL_MS: u64 = 200;

fn default_totals_interval_ms() -> u64 {
    DEFAULT_TOTALS_INTERVAL_MS
}

fn default_currency_exponent() -> u8 {
    2
}

fn default_betting_window_secs() -> u32 {
    15
}

fn default_currency() -> String {
    "EUR".to_owned()
}

fn default_spots() -> Vec<SpotConfig> {
    TableConfig::demo_baccarat().spots
}

/// One table, as declared in `config.toml`. Only `id` is required: the rest defaults to the
/// demo baccarat table's values (15 s window, EUR, player/banker/tie), so `[[tables]] id = "b2"`
/// is a complete baccarat table.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub id: TableId,
    /// Shown to players; empty: the id is shown.
    #[serde(default)]
    pub name: String,
    /// How long betting stays open after a round opens.
    #[serde(default = "default_betting_window_secs")]
    pub betting_window_secs: u32,
    /// ISO 4217 code; every amount is an integer in this currency's minor units.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Digits after the decimal point of the currency (2 for EUR: 100 minor units = 1.00 EUR).
    #[serde(default = "default_currency_exponent")]
    pub currency_exponent: u8,
    #[serde(default = "default_spots")]
    pub spots: Vec<SpotConfig>,
    /// When set, a new round opens by itself this long after the previous one settled or was
    /// voided (and at the first `handle_timeout` of a fresh table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_open_pause_secs: Option<u32>,
    /// At most one `totals` event per this many milliseconds (plus a final one at close).
    #[serde(default = "default_totals_interval_ms")]
    pub totals_interval_ms: u64,
    /// In a cluster, the region whose nodes should own the table (the studio's region). Empty:
    /// any node may own it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
}

/// One bet spot and its limits. Amounts are minor units.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpotConfig {
    pub id: SpotId,
    pub odds: Odds,
    pub min_bet: u64,
    pub max_bet: u64,
    /// The most one player may have on this spot in one round, summed over their bets.
    pub max_per_player_round: u64,
    /// A losing bet on this spot is returned (a push) when any of these spots wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub push_on: Vec<SpotId>,
}

/// Why a table's configuration was refused. Each message says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("table {table}: it has no spots; add at least one [[tables.spots]]")]
    NoSpots { table: TableId },
    #[error("table {table}: spot {spot} is declared twice; give every spot its own id")]
    DuplicateSpot { table: TableId, spot: SpotId },
    #[error(
        "table {table}: spot {spot} has push_on = {other:?}, which is not a spot of this table"
    )]
    UnknownPushSpot {
        table: TableId,
        spot: SpotId,
        other: SpotId,
    },
    #[error(
        "table {table}: spot {spot} needs 1 <= min_bet <= max_bet <= max_per_player_round <= {max} \
         (got {min_bet}, {max_bet}, {max_per_player})"
    )]
    Limits {
        table: TableId,
        spot: SpotId,
        min_bet: u64,
        max_bet: u64,
        max_per_player: u64,
        max: u64,
    },
    #[error(
        "table {table}: spot {spot} could pay more than {max} minor units on one bet; lower max_bet or the odds"
    )]
    PayoutTooLarge {
        table: TableId,
        spot: SpotId,
        max: u64,
    },
    #[error("table {table}: betting_window_secs must be between 1 and 3600")]
    BettingWindow { table: TableId },
    #[error("table {table}: totals_interval_ms must be between 10 and 60000")]
    TotalsInterval { table: TableId },
    #[error(
        "table {table}: currency {currency:?} must be a three-letter ISO 4217 code such as \"EUR\""
    )]
    Currency { table: TableId, currency: String },
    #[error("table {table}: name must be at most 100 characters")]
    Name { table: TableId },
    #[error(
        "table {table}: its welcome snapshot can reach {bytes} bytes, over the {max} bytes a \
         control data channel message may carry; give it fewer spots or shorter spot ids, or \
         raise control.max_message_bytes to at least {bytes} (each player's channel keeps a \
         buffer that size)"
    )]
    TooLarge {
        table: TableId,
        bytes: usize,
        max: usize,
    },
}

impl TableConfig {
    /// The shipped demo table: baccarat-style spots player (1:1), banker (19:20, i.e. 0.95:1)
    /// and tie (8:1); player and banker bets push on a tie. EUR cents, 1.00 to 1000.00 a bet.
    pub fn demo_baccarat() -> Self {
        let spot = |id: &str, num, den, max_bet, push_on: &[&str]| SpotConfig {
            // The literals below are valid spot ids; `parse` cannot fail on them.
            id: SpotId::parse(id).unwrap_or_else(|_| unreachable!("literal spot id")),
            odds: Odds { num, den },
            min_bet: 100,
            max_bet,
            max_per_player_round: max_bet * 2,
            push_on: push_on
                .iter()
                .filter_map(|s| SpotId::parse(s).ok())
                .collect(),
        };
        Self {
            id: TableId::parse("demo").unwrap_or_else(|_| unreachable!("literal table id")),
            name: "Demo Baccarat".to_owned(),
            betting_window_secs: 15,
            currency: "EUR".to_owned(),
            currency_exponent: 2,
            spots: vec![
                spot("player", 1, 1, 100_000, &["tie"]),
                spot("banker", 19, 20, 100_000, &["tie"]),
                spot("tie", 8, 1, 20_000, &[]),
            ],
            auto_open_pause_secs: Some(5),
            totals_interval_ms: DEFAULT_TOTALS_INTERVAL_MS,
            region: String::new(),
        }
    }

    /// The name to show: `name`, or the id when no name is configured.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            self.id.as_str()
        } else {
            &self.name
        }
    }

    /// The spot called `id`, if the table has one.
    pub fn spot(&self, id: &str) -> Option<&SpotConfig> {
        self.spots.iter().find(|s| s.id.as_str() == id)
    }

    /// Checks everything serde cannot: limits in order and within `MAX_AMOUNT`, the largest
    /// possible payout within `MAX_AMOUNT` (so payout arithmetic cannot overflow), unique spots.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let table = || self.id.clone();
        let name_len = self.name.chars().count();
        if name_len > 100 {
            return Err(ConfigError::Name { table: table() });
        }
        if !(1..=3600).contains(&self.betting_window_secs) {
            return Err(ConfigError::BettingWindow { table: table() });
        }
        if !(10..=60_000).contains(&self.totals_interval_ms) {
            return Err(ConfigError::TotalsInterval { table: table() });
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ConfigError::Currency {
                table: table(),
                currency: self.currency.clone(),
            });
        }
        if self.spots.is_empty() {
            return Err(ConfigError::NoSpots { table: table() });
        }
        for (i, s) in self.spots.iter().enumerate() {
            if self.spots.iter().skip(i + 1).any(|o| o.id == s.id) {
                return Err(ConfigError::DuplicateSpot {
                    table: table(),
                    spot: s.id.clone(),
                });
            }
            if let Some(other) = s.push_on.iter().find(|p| self.spot(p.as_str()).is_none()) {
                return Err(ConfigError::UnknownPushSpot {
                    table: table(),
                    spot: s.id.clone(),
                    other: other.clone(),
                });
            }
            let ordered = 1 <= s.min_bet
                && s.min_bet <= s.max_bet
                && s.max_bet <= s.max_per_player_round
                && s.max_per_player_round <= MAX_AMOUNT;
            if !ordered {
                return Err(ConfigError::Limits {
                    table: table(),
                    spot: s.id.clone(),
                    min_bet: s.min_bet,
                    max_bet: s.max_bet,
                    max_per_player: s.max_per_player_round,
                    max: MAX_AMOUNT,
                });
            }
            // The most one player can be paid on this spot in a round: their whole allowance
            // wins. Keeping it within MAX_AMOUNT keeps every payout sum far from u64::MAX.
            let stake = s.max_per_player_round;
            let fits = stake
                .checked_add(s.odds.winnings(stake))
                .is_some_and(|p| p <= MAX_AMOUNT);
            if !fits {
                return Err(ConfigError::PayoutTooLarge {
                    table: table(),
                    spot: s.id.clone(),
                    max: MAX_AMOUNT,
                });
            }
        }
        Ok(())
    }

    /// Checks that the largest `welcome` this table can produce fits in a control data channel
    /// message of `max_bytes` (`control.max_message_bytes`).
    pub fn check_message_size(&self, max_bytes: usize) -> Result<(), ConfigError> {
        let bytes = super::server::welcome_bound(self);
        if bytes > max_bytes {
            return Err(ConfigError::TooLarge {
                table: self.id.clone(),
                bytes,
                max: max_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table with `n` spots named like a roulette layout's (`split-17-20`), at the largest
    /// limits.
    fn table_of(n: usize) -> TableConfig {
        let mut c = TableConfig::demo_baccarat();
        c.spots = (0..n)
            .map(|i| SpotConfig {
                id: SpotId::parse(&format!("split-{}-{}", i % 37, i)).unwrap(),
                odds: Odds { num: 17, den: 1 },
                min_bet: 1,
                max_bet: MAX_AMOUNT / 18,
                max_per_player_round: MAX_AMOUNT / 18,
                push_on: vec![],
            })
            .collect();
        c
    }

    #[test]
    fn a_table_whose_welcome_could_outgrow_a_data_channel_message_is_refused() {
        let limit = super::super::DATA_CHANNEL_MAX_MESSAGE_BYTES;
        let fits = (1..400)
            .take_while(|&n| table_of(n).check_message_size(limit).is_ok())
            .last()
            .unwrap();
        // What fits is a real snapshot: its welcome, at the largest totals, is within the limit.
        let bound = super::super::server::welcome_bound(&table_of(fits));
        assert!(
            bound <= super::super::DATA_CHANNEL_MAX_MESSAGE_BYTES,
            "{bound}"
        );
        assert_eq!(
            table_of(fits + 1).validate(),
            Ok(()),
            "only the size is wrong"
        );
        match table_of(fits + 1).check_message_size(limit) {
            Err(ConfigError::TooLarge { bytes, max, .. }) => {
                assert!(bytes > max);
                assert_eq!(max, super::super::DATA_CHANNEL_MAX_MESSAGE_BYTES);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            fits >= 48,
            "a single-zero roulette's straight-ups and outside bets fit ({fits})"
        );
        // A whole roulette layout (157 spots) fits once the limit is raised.
        assert_eq!(table_of(157).check_message_size(64 * 1024), Ok(()));
    }

    #[test]
    fn demo_baccarat_is_valid_and_has_player_banker_tie() {
        let c = TableConfig::demo_baccarat();
        assert_eq!(c.validate(), Ok(()));
        let ids: Vec<_> = c.spots.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["player", "banker", "tie"]);
        assert_eq!(
            c.spot("banker").map(|s| s.odds),
            Some(Odds { num: 19, den: 20 })
        );
    }

    #[test]
    fn table_config_reads_from_a_toml_tables_entry() {
        #[derive(Deserialize)]
        struct File {
            tables: Vec<TableConfig>,
        }
        let text = r#"
            [[tables]]
            id = "t1"
            name = "Baccarat 1"
            betting_window_secs = 12
            currency = "EUR"

            [[tables.spots]]
            id = "banker"
            odds = "19:20"
            min_bet = 100
            max_bet = 5000
            max_per_player_round = 10000
            push_on = ["tie"]

            [[tables.spots]]
            id = "tie"
            odds = "8:1"
            min_bet = 100
            max_bet = 1000
            max_per_player_round = 1000
        "#;
        let file: File = toml::from_str(text).unwrap();
        let t = &file.tables[0];
        assert_eq!(t.validate(), Ok(()));
        assert_eq!(t.totals_interval_ms, 200);
        assert_eq!(t.auto_open_pause_secs, None);
        assert_eq!(t.currency_exponent, 2);
        assert_eq!(t.spots[0].push_on, vec![SpotId::parse("tie").unwrap()]);
    }

    #[test]
    fn a_tables_entry_with_only_an_id_is_a_complete_baccarat_table() {
        let t: TableConfig = toml::from_str("id = \"bac-2\"").unwrap();
        assert_eq!(t.validate(), Ok(()));
        assert_eq!(t.display_name(), "bac-2");
        assert_eq!(t.spots, TableConfig::demo_baccarat().spots);
        assert_eq!((t.betting_window_secs, t.currency.as_str()), (15, "EUR"));
        assert!(
            toml::from_str::<TableConfig>("id = \"x\"\nwindow = 3").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn invalid_configs_are_refused_with_what_to_fix() {
        let mut c = TableConfig::demo_baccarat();
        c.spots[1].id = c.spots[0].id.clone();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DuplicateSpot { .. })
        ));

        let mut c = TableConfig::demo_baccarat();
        c.spots[0].min_bet = 0;
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("min_bet"), "{e}");

        let mut c = TableConfig::demo_baccarat();
        c.spots[2].odds = Odds {
            num: u32::MAX,
            den: 1,
        };
        c.spots[2].max_per_player_round = MAX_AMOUNT;
        c.spots[2].max_bet = MAX_AMOUNT;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::PayoutTooLarge { .. })
        ));

        let mut c = TableConfig::demo_baccarat();
        c.currency = "euro".into();
        assert!(matches!(c.validate(), Err(ConfigError::Currency { .. })));

        let mut c = TableConfig::demo_baccarat();
        c.spots[0].push_on = vec![SpotId::parse("nope").unwrap()];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::UnknownPushSpot { .. })
        ));

        let mut c = TableConfig::demo_baccarat();
        c.spots.clear();
        assert!(matches!(c.validate(), Err(ConfigError::NoSpots { .. })));
    }
}
