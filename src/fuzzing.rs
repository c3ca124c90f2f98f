//! What the fuzz targets in `fuzz/` need and the rest of the node keeps private: thin entry
//! points onto the parsers of outside input, nothing more. Not an API; see
//! `docs/reliability.md` for the targets.

use crate::config::{Config, ConfigError};
use crate::control::StartError;
use crate::protocol::TableConfig;

/// `config.toml` text with `TABLECAST_*` overrides, as `Config::load` reads a file.
pub fn config_from_text(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    crate::config::from_text_with_env(text, "fuzz input", env, &mut Vec::new())
}

/// The `[[tables]]` entries as the control plane reads them at start.
pub fn table_configs(
    tables: &[toml::Table],
    max_message_bytes: usize,
) -> Result<Vec<TableConfig>, StartError> {
    crate::control::table_configs(tables, max_message_bytes)
}
