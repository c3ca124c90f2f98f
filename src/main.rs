//! The `tablecast` command: `serve` (the default), `token`, `audit verify` and `bench`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use tablecast::auth::{TokenRole, Tokens};
use tablecast::config::{Config, Loaded};
use tablecast::ids::UserId;

#[derive(Parser)]
#[command(
    name = "tablecast",
    version,
    about = "WebRTC SFU and control plane for live-dealer tables"
)]
struct Cli {
    /// Config file. Missing: the built-in defaults (the same as the shipped config.toml).
    #[arg(
        long,
        global = true,
        env = "TABLECAST_CONFIG",
        default_value = "config.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node (what `tablecast` with no subcommand does).
    Serve,
    /// Print a signed token for this node's secret.
    Token {
        /// dealer, player or operator.
        #[arg(long)]
        role: TokenRole,
        /// The table the token is for (`*` for an operator on every table).
        #[arg(long)]
        table: String,
        /// The user id (`sub`). Default: the role and a random suffix.
        #[arg(long)]
        user: Option<String>,
        /// Lifetime, such as 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
    },
    /// Check a table's log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Load a node (started for the run, or --url) with a synthetic dealer and N players, and
    /// measure what it delivers, the latency it adds and what it costs; optionally Janus too.
    Bench(Box<tablecast::bench::BenchArgs>),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check a table log's SHA-256 chain, record numbering and event seq; name the first bad
    /// record. Exit status 0 when the whole log is good, 1 when not. Give a file, or
    /// --redis-url and --table for a cluster's log in Redis.
    Verify {
        /// A table log, such as data/tables/demo.log.
        #[arg(required_unless_present = "redis_url", conflicts_with = "redis_url")]
        path: Option<PathBuf>,
        /// A cluster's Redis, such as redis://127.0.0.1:6379/0 (with --table).
        #[arg(long, requires = "table")]
        redis_url: Option<String>,
        /// The table whose Redis log to check (with --redis-url).
        #[arg(long, requires = "redis_url")]
        table: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The audit reads one file and needs neither the config nor logging.
    if let Some(Command::Audit {
        command:
            AuditCommand::Verify {
                path,
                redis_url,
                table,
            },
    }) = &cli.command
    {
        return match (path, redis_url, table) {
            (Some(path), _, _) => audit_verify(path),
            (None, Some(url), Some(table)) => audit_verify_redis(url, table),
            _ => anyhow::bail!("give a log file, or --redis-url and --table"),
        };
    }
    // The load tool starts its own node with a generated config; it reads no config file.
    if let Some(Command::Bench(args)) = &cli.command {
        return bench(args);
    }
    let Loaded { config, notes } = Config::load(&cli.config)
        .with_context(|| format!("loading config {}", cli.config.display()))?;
    tablecast::telemetry::init(&config.log)?;
    for note in &notes {
        tracing::warn!("{note}");
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Token {
            role,
            table,
            user,
            ttl,
        } => token(&config, role, &table, user, ttl),
        Command::Audit { .. } | Command::Bench(_) => {
            unreachable!("handled before the config is loaded")
        }
    }
}

fn audit_verify(path: &std::path::Path) -> anyhow::Result<()> {
    match tablecast::store::audit::verify(path) {
        Ok(report) => {
            println!(
                "ok: {} records, {} events, last seq {}, chain head {}",
                report.records, report.events, report.last_seq, report.last_hash
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            std::process::exit(1);
        }
    }
}

/// `audit verify --redis-url URL --table T`: the file audit's checks on a Redis log.
fn audit_verify_redis(url: &str, table: &str) -> anyhow::Result<()> {
    use tablecast::store::{RedisStore, StoreError};
    let table =
        tablecast::ids::TableId::parse(table).with_context(|| format!("--table {table:?}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(async {
        let store = RedisStore::connect(url).await?;
        store.audit(&table).await
    });
    match result {
        Ok(report) => {
            println!(
                "ok: {} records, {} events, last seq {}, chain head {}",
                report.records, report.events, report.last_seq, report.last_hash
            );
            Ok(())
        }
        Err(StoreError::RedisCorrupt {
            url,
            entry,
            id,
            reason,
            ..
        }) => {
            eprintln!("{url} table {table}: entry {entry} (stream id {id}): {reason}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

fn bench(args: &tablecast::bench::BenchArgs) -> anyhow::Result<()> {
    tablecast::telemetry::init(&tablecast::config::LogConfig {
        filter: "info,rtc=error,rtc_ice=error,rtc_dtls=error,rtc_sctp=error,rtc_srtp=error".into(),
        format: "text".into(),
    })?;
    // Two threads for signalling and the dealer; the players run on the load threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    if args.cascade {
        let report = runtime.block_on(tablecast::bench::cascade::run(args))?;
        print!("\n{}", tablecast::bench::cascade_report::render(&report));
        if let Some(path) = &args.json {
            let text = serde_json::to_string_pretty(&report)?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(());
    }
    if let Some(nodes) = args.cluster {
        let report = runtime.block_on(tablecast::bench::cluster::run(args, nodes))?;
        print!("\n{}", tablecast::bench::cluster_report::render(&report));
        if let Some(path) = &args.json {
            let text = serde_json::to_string_pretty(&report)?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(());
    }
    let output = runtime.block_on(tablecast::bench::run(args))?;
    print!("\n{}", tablecast::bench::report::render(&output));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&output)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(tablecast::app::run(config, shutdown_signal()))?;
    Ok(())
}

fn token(
    config: &Config,
    role: TokenRole,
    table: &str,
    user: Option<String>,
    ttl: Duration,
) -> anyhow::Result<()> {
    let tokens = Tokens::from_config(&config.auth, &config.data.dir)?;
    let user = match user {
        Some(u) => UserId::parse(&u)?,
        None => UserId::parse(&format!(
            "{role}-{}",
            hex::encode(rand::random::<[u8; 4]>())
        ))?,
    };
    println!("{}", tokens.issue(role, table, &user, ttl)?);
    Ok(())
}

/// `90s`, `30m`, `1h`, `7d`, or plain seconds.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; use e.g. 90s, 30m, 1h, 7d"))?;
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use s, m, h or d")),
    };
    match n.checked_mul(unit_secs) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "{s:?} is out of range; use a positive duration such as 1h"
        )),
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stop with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
