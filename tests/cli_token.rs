//! `tablecast token` prints a token the node accepts: signed with the configured secret, the
//! `TABLECAST_AUTH_SECRET` override, or the secret the node generated and kept in its data dir.

mod common;

use common::temp_dir;
use std::process::Command;
use tablecast::auth::{TableScope, TokenRole, Tokens};

fn tablecast(dir: &std::path::Path, config: &str, args: &[&str]) -> std::process::Output {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_tablecast"))
        .current_dir(dir)
        .env_remove("TABLECAST_AUTH_SECRET")
        .env_remove("TABLECAST_CONFIG")
        .args(args)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn token_is_signed_with_the_configured_secret() {
    let dir = temp_dir("cli");
    let secret = "cli-secret-cli-secret-cli-secret-0123";
    let out = tablecast(
        &dir,
        &format!("[auth]\nsecret = \"{secret}\"\n"),
        &[
            "token", "--role", "dealer", "--table", "demo", "--user", "bob", "--ttl", "2h",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        token.trim().lines().count(),
        1,
        "stdout holds only the token"
    );
    let id = Tokens::from_secret(secret.as_bytes())
        .verify(token.trim())
        .unwrap();
    assert_eq!(id.role, TokenRole::Dealer);
    assert_eq!(id.user.as_str(), "bob");
    assert_eq!(
        id.scope,
        TableScope::One(tablecast::ids::TableId::parse("demo").unwrap())
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_environment_secret_wins_over_the_file() {
    let dir = temp_dir("cli-env");
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        "[auth]\nsecret = \"file-secret-file-secret-file-secret\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tablecast"))
        .env(
            "TABLECAST_AUTH_SECRET",
            "env-secret-env-secret-env-secret-xx",
        )
        .args(["token", "--role", "player", "--table", "demo", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(
        Tokens::from_secret(b"env-secret-env-secret-env-secret-xx")
            .verify(token.trim())
            .is_ok()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_a_secret_one_is_generated_once_and_kept() {
    let dir = temp_dir("cli-gen");
    let config = format!("[data]\ndir = \"{}\"\n", dir.join("data").display());
    let first = tablecast(
        &dir,
        &config,
        &["token", "--role", "operator", "--table", "*"],
    );
    let second = tablecast(
        &dir,
        &config,
        &["token", "--role", "player", "--table", "demo"],
    );
    assert!(
        first.status.success() && second.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let secret = std::fs::read_to_string(dir.join("data/auth.secret")).unwrap();
    let tokens = Tokens::from_secret(secret.trim().as_bytes());
    for out in [first, second] {
        assert!(
            tokens
                .verify(String::from_utf8(out.stdout).unwrap().trim())
                .is_ok()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_arguments_fail_with_a_reason() {
    let dir = temp_dir("cli-bad");
    for args in [
        &["token", "--role", "king", "--table", "demo"][..],
        &["token", "--role", "dealer", "--table", "*"][..],
        &[
            "token", "--role", "dealer", "--table", "demo", "--ttl", "soon",
        ][..],
    ] {
        let out = tablecast(&dir, "", args);
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    let out = tablecast(
        &dir,
        "[http]\nlisten = 5\n",
        &["token", "--role", "dealer", "--table", "demo"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));
    let _ = std::fs::remove_dir_all(dir);
}
