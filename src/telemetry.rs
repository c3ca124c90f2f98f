//! Logging: `tracing` to stderr, as text or JSON, filtered by `RUST_LOG` or `[log] filter`.

use crate::config::LogConfig;
use tracing_subscriber::EnvFilter;

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "[log] filter {filter:?} is not valid: {reason}; use a RUST_LOG-style filter such as \"info\" or \"tablecast=debug,info\""
    )]
    Filter { filter: String, reason: String },
}

/// Installs the global subscriber. `RUST_LOG` wins over `[log] filter` when set. Does nothing
/// when a subscriber is already installed (tests start many nodes in one process).
pub fn init(log: &LogConfig) -> Result<(), TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => parse_filter(&env)?,
        _ => parse_filter(&log.filter)?,
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // try_init fails only when a global subscriber exists already; keep that one.
    let _ = if log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    Ok(())
}

fn parse_filter(filter: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::builder()
        .parse(filter)
        .map_err(|e| TelemetryError::Filter {
            filter: filter.to_owned(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_says_what_a_good_one_looks_like() {
        let e = parse_filter("info,=[").unwrap_err().to_string();
        assert!(e.contains("RUST_LOG-style"), "{e}");
        assert!(parse_filter("tablecast=debug,info").is_ok());
    }
}
