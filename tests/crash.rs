//! A node killed with SIGKILL loses no acknowledged bet: after a restart every bet a player saw
//! `bet.accepted` for is in the log and in the table's state (refunded with the interrupted
//! round), and `tablecast audit verify` passes on the log, and fails on a copy with one byte
//! changed.

mod common;

use common::wait_until;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tablecast::auth::{TokenRole, Tokens};
use tablecast::ids::UserId;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_tablecast");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn write_config(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        r#"
[http]
tls = false
listen = "127.0.0.1:{port}"
[media]
workers = 1
udp_port = 0
bind_ip = "127.0.0.1"
announce_ips = ["127.0.0.1"]
[auth]
secret = "{secret}"
demo = false
[metrics]
listen = ""
[data]
dir = "{data}"
[log]
filter = "info"
[[tables]]
id = "demo"
betting_window_secs = 120
"#,
        secret = common::TEST_SECRET,
        data = dir.join("data").display(),
    );
    std::fs::write(&path, text).expect("config");
    path
}

fn spawn_node(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(BIN)
        .args(["--config"])
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("tablecast starts")
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "the node never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn token(role: TokenRole, user: &str) -> String {
    Tokens::from_secret(common::TEST_SECRET.as_bytes())
        .issue(
            role,
            "demo",
            &UserId::parse(user).unwrap(),
            Duration::from_secs(600),
        )
        .expect("token")
}

/// A player that bets as fast as the node answers, recording every acknowledged bet id (and
/// counting it in `acked_so_far`), until its connection dies.
async fn bettor(
    port: u16,
    user: String,
    round: u64,
    acked_so_far: Arc<AtomicUsize>,
) -> (String, Vec<(String, u64)>) {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws/demo"))
        .await
        .expect("ws");
    let (mut tx, mut rx) = ws.split();
    let hello = json!({"type": "hello", "token": token(TokenRole::Player, &user)});
    let _ = tx.send(Message::Text(hello.to_string().into())).await;
    let mut acked = Vec::new();
    let mut next = 0u64;
    let send_bet = async |tx: &mut futures_util::stream::SplitSink<_, Message>, n: u64| {
        let bet = json!({"type": "bet.place", "id": format!("{user}-{n}"), "round": round,
                         "spot": "banker", "amount": 100 + n});
        tx.send(Message::Text(bet.to_string().into())).await.is_ok()
    };
    // Keep a few bets in flight so that some are unanswered when the node dies.
    for _ in 0..3 {
        if !send_bet(&mut tx, next).await {
            return (user, acked);
        }
        next += 1;
    }
    while let Some(Ok(frame)) = rx.next().await {
        let Message::Text(text) = frame else { continue };
        let msg: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
        match msg["type"].as_str() {
            Some("bet.accepted") => {
                acked.push((
                    msg["id"].as_str().unwrap().to_owned(),
                    msg["amount"].as_u64().unwrap_or(0),
                ));
                acked_so_far.fetch_add(1, Ordering::Relaxed);
                if next < 500 {
                    if !send_bet(&mut tx, next).await {
                        break;
                    }
                    next += 1;
                }
            }
            Some("error") if msg["code"] == "rate_limited" => {
                // Over the limit: that bet was refused, not acknowledged. Slow down (pacing).
                tokio::time::sleep(Duration::from_millis(100)).await;
                if !send_bet(&mut tx, next).await {
                    break;
                }
                next += 1;
            }
            _ => {}
        }
    }
    (user, acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_acknowledged_bets_loses_none_and_the_log_audits() {
    let dir = common::temp_dir("crash");
    let port = free_port();
    let config = write_config(&dir, port);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let mut node = spawn_node(&config, &dir.join("node-1.log"));
    wait_ready(&http, &base).await;
    let r = http
        .post(format!("{base}/api/v1/tables/demo/round/open"))
        .bearer_auth(token(TokenRole::Dealer, "dealer"))
        .send()
        .await
        .expect("open");
    assert_eq!(r.status().as_u16(), 200);
    let round = r.json::<Value>().await.unwrap()["round"].as_u64().unwrap();

    let acked_so_far = Arc::new(AtomicUsize::new(0));
    let bettors: Vec<_> = (0..10)
        .map(|i| {
            let counter = Arc::clone(&acked_so_far);
            tokio::spawn(bettor(port, format!("p{i}"), round, counter))
        })
        .collect();
    // Let bets flow, then kill the node in the middle of them.
    wait_until(
        Duration::from_secs(20),
        "100 bets are acknowledged: acknowledged",
        async || acked_so_far.load(Ordering::Relaxed),
        |&n| n >= 100,
    )
    .await;
    node.kill().expect("SIGKILL");
    let _ = node.wait();
    let mut acked: Vec<(String, Vec<(String, u64)>)> = Vec::new();
    for b in bettors {
        acked.push(b.await.expect("bettor"));
    }
    let total_acked: usize = acked.iter().map(|(_, a)| a.len()).sum();
    assert!(
        total_acked >= 50,
        "only {total_acked} bets were acknowledged before the kill"
    );

    // Every acknowledged bet is in the log.
    let log_path = dir.join("data/tables/demo.log");
    let logged: BTreeSet<(String, String)> = std::fs::read_to_string(&log_path)
        .expect("the log")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["record"]["kind"] == "bet_accepted")
        .map(|l| {
            (
                l["record"]["user"].as_str().unwrap().to_owned(),
                l["record"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (user, bets) in &acked {
        for (id, _) in bets {
            assert!(
                logged.contains(&(user.clone(), id.clone())),
                "acknowledged bet {user}/{id} is not in the log"
            );
        }
    }

    // After a restart, the interrupted round is voided and every acknowledged bet refunded.
    let mut node = spawn_node(&config, &dir.join("node-2.log"));
    wait_ready(&http, &base).await;
    let snap: Value = http
        .get(format!("{base}/api/v1/tables/demo"))
        .bearer_auth(token(TokenRole::Player, "observer"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(snap["state"], "idle", "{snap}");
    assert_eq!(snap["last_round"]["status"], "voided", "{snap}");
    assert_eq!(snap["last_round"]["reason"], "node_restart", "{snap}");
    for (user, bets) in acked.iter().filter(|(_, b)| !b.is_empty()) {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws/demo"))
            .await
            .unwrap();
        let (mut tx, mut rx) = ws.split();
        let hello = json!({"type": "hello", "token": token(TokenRole::Player, user)});
        tx.send(Message::Text(hello.to_string().into()))
            .await
            .unwrap();
        let payout = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(Message::Text(t))) = rx.next().await {
                let m: Value = serde_json::from_str(t.as_str()).unwrap();
                if m["type"] == "payout" {
                    return m;
                }
            }
            panic!("connection ended without a payout for {user}");
        })
        .await
        .expect("the refund arrives");
        assert_eq!(payout["reason"], "voided");
        let refunded: BTreeSet<&str> = payout["bets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap())
            .collect();
        for (id, _) in bets {
            assert!(
                refunded.contains(id.as_str()),
                "{user}/{id} was acknowledged but not refunded"
            );
        }
        let want: u64 = payout["bets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["amount"].as_u64().unwrap())
            .sum();
        assert_eq!(
            payout["total"].as_u64().unwrap(),
            want,
            "a void pays back each stake"
        );
    }
    node.kill().ok();
    let _ = node.wait();

    // The audit passes on the log, and fails on a copy with any one byte changed.
    let ok = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(&log_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.starts_with("ok: "), "{stdout}");
    let mut bytes = std::fs::read(&log_path).unwrap();
    let lines_before = bytes[..bytes.len() / 2]
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let tampered = dir.join("tampered.log");
    std::fs::write(&tampered, &bytes).unwrap();
    let bad = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(&tampered)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("line {}", lines_before + 1)),
        "the audit names the changed line ({}): {stderr}",
        lines_before + 1
    );
    let _ = std::fs::remove_dir_all(&dir);
}
