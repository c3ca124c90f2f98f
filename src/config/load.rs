//! Loading: file (or the built-in defaults) → `TABLECAST_SECTION_KEY` environment overrides →
//! typed [`Config`] → validation.
//!
//! Overrides are applied to the parsed TOML table before deserializing, so every key can be
//! overridden without a hand-written list. An override's value is read as the type the key has:
//! strings verbatim, numbers and booleans as TOML, arrays as TOML (`[...]`) or comma-separated.

use super::Config;
use crate::ids::TableId;
use std::collections::BTreeSet;
use std::path::Path;

/// The shipped `config.toml`; used as the defaults when the config file does not exist.
pub const SHIPPED_CONFIG: &str = include_str!("../../config.toml");

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "TABLECAST_";

/// Sections whose keys can be overridden from the environment: every table of the serialized
/// defaults (`[[tables]]` is a list, not a section).
fn sections(defaults: &toml::Table) -> Vec<&str> {
    defaults
        .iter()
        .filter(|(_, v)| v.is_table())
        .map(|(k, _)| k.as_str())
        .collect()
}

/// Keys that exist but have no default value (so they are absent from the serialized defaults).
const OPTIONAL_KEYS: &[(&str, &str)] = &[("http", "plain_listen")];

/// `TABLECAST_*` variables that are not config keys.
const NOT_KEYS: &[&str] = &["TABLECAST_CONFIG", "TABLECAST_LOG"];

/// A loaded configuration and what the operator should be told about how it was loaded.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// Warnings to log once telemetry is up (missing file, ignored variables…).
    pub notes: Vec<String>,
}

/// Why the configuration could not be loaded. Each message names the key and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read config file {path}: {source}; fix its permissions or pass another --config"
    )]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin} is not valid: {message}")]
    Parse { origin: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

pub(super) fn load(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, ConfigError> {
    let mut notes = Vec::new();
    let (text, origin) = match std::fs::read_to_string(path) {
        Ok(text) => (text, path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            notes.push(format!(
                "config file {} not found; using the built-in defaults (the same as the shipped config.toml)",
                path.display()
            ));
            (
                SHIPPED_CONFIG.to_owned(),
                "built-in default config".to_owned(),
            )
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    let config = from_text_with_env(&text, &origin, env, &mut notes)?;
    Ok(Loaded { config, notes })
}

/// The part of [`load`] after the file is read: TOML text (named `origin` in errors) with the
/// environment's overrides applied, deserialized and validated. Notes for the operator are added
/// to `notes`.
pub(crate) fn from_text_with_env(
    text: &str,
    origin: &str,
    env: impl IntoIterator<Item = (String, String)>,
    notes: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    let origin = origin.to_owned();
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            origin: origin.clone(),
            message: one_line(&e),
        })?;

    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    env.sort();
    let defaults = toml::Table::try_from(Config::default()).map_err(|e| ConfigError::Parse {
        origin: "built-in defaults".into(),
        message: format!("internal: cannot serialize them: {e}"),
    })?;
    let mut applied = Vec::new();
    for (var, value) in env {
        if NOT_KEYS.contains(&var.as_str()) {
            continue;
        }
        match apply_env(&mut table, &defaults, &var, &value)? {
            true => applied.push(var),
            false => notes.push(format!(
                "ignoring environment variable {var}: no such config section; use TABLECAST_<SECTION>_<KEY> with a section of {}",
                sections(&defaults).join(", ")
            )),
        }
    }

    let config: Config = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| {
            let mut message = one_line(&e);
            if !applied.is_empty() {
                message.push_str(&format!(
                    " (with environment overrides {})",
                    applied.join(", ")
                ));
            }
            ConfigError::Parse { origin, message }
        })?;
    validate(&config)?;
    Ok(config)
}

pub(super) fn from_toml(text: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
        origin: "config".into(),
        message: one_line(&e),
    })?;
    validate(&config)?;
    Ok(config)
}

fn one_line(e: &toml::de::Error) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Applies one `TABLECAST_SECTION_KEY=value`. Returns false when the section is unknown.
fn apply_env(
    table: &mut toml::Table,
    defaults: &toml::Table,
    var: &str,
    value: &str,
) -> Result<bool, ConfigError> {
    let name = var[ENV_PREFIX.len()..].to_ascii_lowercase();
    let Some((section, key)) = name.split_once('_') else {
        return Ok(false);
    };
    if !sections(defaults).contains(&section) {
        return Ok(false);
    }
    let env_err = |message: String| ConfigError::Env {
        var: var.to_owned(),
        message,
    };

    let default_value = defaults.get(section).and_then(|s| s.get(key)).cloned();
    let current = table.get(section).and_then(|s| s.get(key)).cloned();
    let known = default_value.is_some() || OPTIONAL_KEYS.contains(&(section, key));
    if !known {
        let keys: Vec<String> = defaults
            .get(section)
            .and_then(|s| s.as_table())
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        return Err(env_err(format!(
            "[{section}] has no key `{key}`; known keys: {}",
            keys.join(", ")
        )));
    }

    let section_table = table
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| env_err(format!("[{section}] in the config file is not a table")))?;

    let optional = default_value.is_none();
    let shape = default_value.or(current);
    let parsed = match shape {
        // Optional keys (no default): empty means "unset".
        _ if optional && value.trim().is_empty() => None,
        Some(toml::Value::String(_)) => Some(toml::Value::String(value.to_owned())),
        Some(toml::Value::Array(_)) => Some(parse_array(value).map_err(env_err)?),
        Some(toml::Value::Integer(_))
        | Some(toml::Value::Boolean(_))
        | Some(toml::Value::Float(_)) => {
            let v: toml::Value = value.trim().parse().map_err(|_| {
                env_err(format!(
                    "{value:?} is not a valid {}",
                    shape_name(shape.as_ref())
                ))
            })?;
            Some(v)
        }
        _ => Some(scalar(value)),
    };
    match parsed {
        Some(v) => section_table.insert(key.to_owned(), v),
        None => section_table.remove(key),
    };
    Ok(true)
}

fn shape_name(v: Option<&toml::Value>) -> &'static str {
    match v {
        Some(toml::Value::Integer(_)) => "integer",
        Some(toml::Value::Boolean(_)) => "boolean (true or false)",
        Some(toml::Value::Float(_)) => "number",
        _ => "value",
    }
}

/// A TOML value, or the raw string when it is not one (`127.0.0.1` is not TOML, and means a string).
fn scalar(value: &str) -> toml::Value {
    value
        .trim()
        .parse()
        .unwrap_or_else(|_| toml::Value::String(value.trim().to_owned()))
}

/// `[1, 2]` as TOML, or `a,b,c` as a list; empty means an empty list.
fn parse_array(value: &str) -> Result<toml::Value, String> {
    let trimmed = value.trim();
    if trimmed.starts_with('[') {
        return trimmed
            .parse()
            .map_err(|e: toml::de::Error| format!("not a TOML array: {}", one_line(&e)));
    }
    let items = trimmed
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(scalar)
        .collect();
    Ok(toml::Value::Array(items))
}

/// Checks what types alone cannot. Each error names the key and the fix.
fn validate(c: &Config) -> Result<(), ConfigError> {
    validate_cluster(c)?;
    super::turn::validate(&c.turn).map_err(|(key, message)| invalid(key, message))?;
    if c.http.max_sdp_bytes < 1024 {
        return Err(invalid(
            "http.max_sdp_bytes",
            "must be at least 1024; the default is 65536",
        ));
    }
    if c.http.tls && (c.http.cert.as_os_str().is_empty() || c.http.key.as_os_str().is_empty()) {
        return Err(invalid(
            "http.cert/http.key",
            "set both paths, or set http.tls = false",
        ));
    }
    if c.http.plain_listen == Some(c.http.listen) && c.http.listen.port() != 0 {
        return Err(invalid(
            "http.plain_listen",
            "must differ from http.listen; remove it or pick another port",
        ));
    }
    if let Some(addr) = c.metrics.listen
        && addr.port() != 0
        && (addr == c.http.listen || Some(addr) == c.http.plain_listen)
    {
        return Err(invalid(
            "metrics.listen",
            format!(
                "{addr} is also an [http] listener; pick another port (the default is 127.0.0.1:9464), or \"\" for none"
            ),
        ));
    }
    if c.media.workers > 1024 {
        return Err(invalid(
            "media.workers",
            "at most 1024; use 0 for one per core",
        ));
    }
    if c.media.udp_port != 0 {
        let workers = if c.media.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            c.media.workers
        };
        if usize::from(c.media.udp_port) + workers - 1 > usize::from(u16::MAX) {
            return Err(invalid(
                "media.udp_port",
                format!(
                    "udp_port + workers - 1 must be at most 65535 ({workers} workers); lower udp_port"
                ),
            ));
        }
    }
    if let Some(ip) = c.media.announce_ips.iter().find(|ip| ip.is_unspecified()) {
        return Err(invalid(
            "media.announce_ips",
            format!(
                "{ip} cannot be announced; list the addresses players reach this node at, or leave it empty"
            ),
        ));
    }
    if c.media.socket_recv_buffer == 0 || c.media.socket_send_buffer == 0 {
        return Err(invalid(
            "media.socket_recv_buffer/socket_send_buffer",
            "must be positive; the default is 4194304",
        ));
    }
    let n = c.media.nack_buffer_packets;
    if !n.is_power_of_two() || !(64..=32768).contains(&n) {
        return Err(invalid(
            "media.nack_buffer_packets",
            "must be a power of two from 64 to 32768; the default is 1024",
        ));
    }
    if c.media.connect_timeout_secs == 0 || c.media.idle_timeout_secs == 0 {
        return Err(invalid(
            "media.connect_timeout_secs/idle_timeout_secs",
            "must be at least 1 second",
        ));
    }
    if !(4096..=262_144).contains(&c.control.max_message_bytes) {
        return Err(invalid(
            "control.max_message_bytes",
            "must be from 4096 to 262144; the default is 16384",
        ));
    }
    if c.data.dir.as_os_str().is_empty() {
        return Err(invalid(
            "data.dir",
            "must not be empty; the default is \"data\"",
        ));
    }
    if !matches!(c.log.format.as_str(), "text" | "json") {
        return Err(invalid(
            "log.format",
            format!(
                "{:?} is not a format; use \"text\" or \"json\"",
                c.log.format
            ),
        ));
    }
    validate_tables(&c.tables)
}

fn validate_cluster(c: &Config) -> Result<(), ConfigError> {
    let k = &c.cluster;
    if !k.redis_url.is_empty() {
        let scheme = k.redis_url.split("://").next().unwrap_or_default();
        if !matches!(scheme, "redis" | "rediss" | "redis+unix" | "unix") {
            return Err(invalid(
                "cluster.redis_url",
                format!(
                    "{:?} is not a Redis URL: use redis://HOST:PORT/DB (rediss:// for TLS), or \"\" for a node alone",
                    k.redis_url
                ),
            ));
        }
    }
    if !(1..=300).contains(&k.node_timeout_secs) {
        return Err(invalid(
            "cluster.node_timeout_secs",
            "must be between 1 and 300; the default is 5",
        ));
    }
    if !(200..=60_000).contains(&k.lease_ms) {
        return Err(invalid(
            "cluster.lease_ms",
            "must be between 200 and 60000; the default is 2000",
        ));
    }
    if !(1..=3600).contains(&k.drain_timeout_secs) {
        return Err(invalid(
            "cluster.drain_timeout_secs",
            "must be between 1 and 3600; the default is 30",
        ));
    }
    let url = c.node.public_url.trim_end_matches('/');
    if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid(
            "node.public_url",
            format!(
                "{url:?} must start with http:// or https://, such as \"https://node-a.example:8443\", or be \"\""
            ),
        ));
    }
    Ok(())
}

fn validate_tables(tables: &[toml::Table]) -> Result<(), ConfigError> {
    let mut seen = BTreeSet::new();
    for (i, t) in tables.iter().enumerate() {
        let key = format!("tables[{i}].id");
        let id = t
            .get("id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| invalid(&key, "every [[tables]] entry needs id = \"...\""))?;
        let id = TableId::parse(id).map_err(|e| invalid(&key, e.to_string()))?;
        if !seen.insert(id.clone()) {
            return Err(invalid(
                &key,
                format!("table {id} is listed twice; give each table its own id"),
            ));
        }
        if t.get("name").is_some_and(|name| !name.is_str()) {
            return Err(invalid(&format!("tables[{i}].name"), "must be a string"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
