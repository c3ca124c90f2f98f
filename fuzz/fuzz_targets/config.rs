//! `config.toml` and its `TABLECAST_*` environment overrides, loaded as the node loads them at
//! start (`Config::load`: parse, apply overrides, deserialize, validate), then its
//! `[[tables]]` read as the control plane reads them (`TableConfig`, validated, checked against
//! the data-channel message size) and each table built.
//!
//! Input: the TOML text, then optionally a NUL byte and `NAME=value` lines, the environment.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tablecast::fuzzing;
use tablecast::table::Table;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (text, env) = input.split_once('\0').unwrap_or((input, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let Ok(config) = fuzzing::config_from_text(text, env) else {
        return;
    };
    let _ = config.table_ids();
    let Ok(tables) = fuzzing::table_configs(&config.tables, config.control.max_message_bytes)
    else {
        return;
    };
    for table in tables {
        Table::new(table).expect("a table config that passed validation builds a table");
    }
});
