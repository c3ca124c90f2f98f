//! One address floods the node — WHEP sessions, WebSockets, bets, all as fast as it can — while
//! 20 well-behaved players on the same table bet at a steady pace. The node's default `[limits]`
//! turn the flood away, and the players lose no event and see their bets answered about as fast
//! as without the flood (p99 within 2x).

mod common;

use common::control::{WsPlayer, hello, seqs, snapshot, token_for};
use common::{TestNode, offer};
use futures_util::future::join_all;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tablecast::auth::TokenRole;
use tablecast::config::LimitsConfig;
use tablecast::limits::Limit;

const PLAYERS: usize = 20;
/// Bets each player sends per phase, one every `PACE`.
const BETS: usize = 10;
const PACE: Duration = Duration::from_millis(200);
const FLOODER: &str = "127.0.0.9";
/// Connections the flood makes WHEP setups on, and loops opening WebSockets, side by side.
const SETUP_LANES: usize = 16;
const SOCKET_LANES: u64 = 8;

/// Every player bets `BETS` times at `PACE`; returns each bet's time to `bet.accepted`, in ms.
async fn bet_phase(players: &[WsPlayer], phase: &str) -> Vec<f64> {
    let latencies = join_all(players.iter().enumerate().map(|(i, p)| async move {
        let mut sent = Vec::new();
        let start = Instant::now();
        for b in 0..BETS {
            // Spread the players over the pace, so bets arrive steadily.
            let due = start + PACE * b as u32 + PACE * i as u32 / PLAYERS as u32;
            tokio::time::sleep_until(due.into()).await;
            let id = format!("{phase}-{i}-{b}");
            p.send(
                json!({"type": "bet.place", "id": id, "round": 1, "spot": "banker", "amount": 100}),
            );
            sent.push((id, Instant::now()));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        for (id, at) in sent {
            let answered = loop {
                let got = p.got();
                if let Some(g) = got.iter().find(|g| g.msg["id"] == id.as_str()) {
                    break g.clone();
                }
                assert!(Instant::now() < deadline, "bet {id} never answered");
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            assert_eq!(
                answered.msg["type"], "bet.accepted",
                "{id}: {}",
                answered.msg
            );
            out.push(answered.at.duration_since(at).as_secs_f64() * 1000.0);
        }
        out
    }))
    .await;
    let mut all: Vec<f64> = latencies.into_iter().flatten().collect();
    all.sort_by(|a, b| a.total_cmp(b));
    all
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What the flood got past the node.
#[derive(Debug, Default)]
struct Flooded {
    sessions: u64,
    sockets: u64,
    bets_sent: u64,
}

/// Floods the node at `addr` from `FLOODER` until `stop`: WHEP setups on `SETUP_LANES` connections,
/// WebSockets left silent, and WebSockets that say hello and send bets without pause, each as
/// fast as it can. It runs on its own thread at the lowest CPU priority: an attacker's CPU is not
/// the node's, and on a shared test machine the flood must not win by taking the node's cores.
fn flood(
    addr: std::net::SocketAddr,
    whep_url: String,
    token: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Flooded> {
    std::thread::spawn(move || {
        // SAFETY: setpriority on this thread's own id changes only its scheduling priority.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = reqwest::Client::builder()
                .local_address(FLOODER.parse::<std::net::IpAddr>().unwrap())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let setups = |client: reqwest::Client| {
                let (url, token, stop) = (whep_url.clone(), token.clone(), stop.clone());
                async move {
                    let mut created = 0;
                    while !stop.load(Relaxed) {
                        if let Ok(r) = client
                            .post(&url)
                            .header(AUTHORIZATION, format!("Bearer {token}"))
                            .header(CONTENT_TYPE, "application/sdp")
                            .body(offer("recvonly"))
                            .send()
                            .await
                            && r.status() == 201
                        {
                            created += 1;
                        }
                    }
                    created
                }
            };
            let sockets = |lane: u64| {
                let (token, stop) = (token.clone(), stop.clone());
                async move {
                let (mut opened, mut bets, mut held) = (0u64, 0u64, Vec::new());
                while !stop.load(Relaxed) {
                    match WsPlayer::connect_to(addr, "demo", FLOODER.parse().unwrap()).await {
                        Ok(p) => {
                            // Every other socket says hello and bets without pause; the rest
                            // stay silent.
                            if opened % 2 == 0 {
                                p.send(hello(&token, None));
                                for b in 0..200 {
                                    p.send(json!({"type": "bet.place", "id": format!("f{lane}-{opened}-{b}"), "round": 1, "spot": "banker", "amount": 100}));
                                    bets += 1;
                                }
                            }
                            opened += 1;
                            held.push(p);
                        }
                        Err(status) => {
                            assert_eq!(status, 429, "the flood is refused with 429");
                            tokio::task::yield_now().await;
                        }
                    }
                }
                for p in held {
                    p.close().await;
                }
                (opened, bets)
                }
            };
            let (setups, sockets) = tokio::join!(
                futures_util::future::join_all((0..SETUP_LANES).map(|_| setups(client.clone()))),
                futures_util::future::join_all((0..SOCKET_LANES).map(sockets)),
            );
            Flooded {
                sessions: setups.iter().sum(),
                sockets: sockets.iter().map(|s| s.0).sum(),
                bets_sent: sockets.iter().map(|s| s.1).sum(),
            }
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_does_not_delay_other_players() {
    let n = TestNode::start_with(|c| {
        let table: toml::Table =
            toml::from_str("id = \"demo\"\nbetting_window_secs = 600\n").unwrap();
        c.tables = vec![table];
        // The shipped limits, not the test nodes' wide-open ones.
        c.limits = LimitsConfig::default();
        c.media.connect_timeout_secs = 60;
    })
    .await;
    let (status, body) = common::control::dealer(&n, "open", None).await;
    assert_eq!(status, 200, "{body}");

    let players: Vec<WsPlayer> = join_all((0..PLAYERS).map(|i| {
        let n = &n;
        async move {
            // Players on their own networks, each with its own address.
            let ip = format!("127.0.1.{}", i + 1).parse().unwrap();
            let p = WsPlayer::connect_from(n, "demo", ip)
                .await
                .expect("a player connects");
            p.send(hello(
                &token_for(n, TokenRole::Player, &format!("good-{i}")),
                None,
            ));
            p
        }
    }))
    .await;
    for p in &players {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !p.got().iter().any(|g| g.msg["type"] == "welcome") {
            assert!(Instant::now() < deadline, "no welcome");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // Quiet and flooded phases alternate, so that drift in the machine's load falls on both. A
    // shared test machine sometimes stalls a whole phase (a slow fsync under someone else's
    // build); an attempt whose flooded p99 is over 2x is measured again, up to three times, and
    // every attempt is printed. A flood that really slows the node fails all three.
    let mut got = Flooded::default();
    let mut attempts = Vec::new();
    let (quiet, flooded) = loop {
        let attempt = attempts.len();
        let mut quiet = Vec::new();
        let mut flooded = Vec::new();
        for round in 0..2 {
            quiet.extend(bet_phase(&players, &format!("quiet{attempt}-{round}")).await);
            let stop = Arc::new(AtomicBool::new(false));
            let socket_refusals = || {
                let m = &n.node.metrics().node;
                m.limit_refusals(Limit::PendingWebSockets)
                    + m.limit_refusals(Limit::WebSocketsPerAddress)
                    + m.limit_refusals(Limit::Setups)
            };
            let before = socket_refusals();
            let flooder = flood(
                n.node.http_addr(),
                n.url("/whep/demo"),
                token_for(&n, TokenRole::Player, "flooder"),
                stop.clone(),
            );
            // Let the flood reach its caps before measuring.
            let deadline = Instant::now() + Duration::from_secs(10);
            while socket_refusals() == before {
                assert!(Instant::now() < deadline, "the flood never reached a cap");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            flooded.extend(bet_phase(&players, &format!("flood{attempt}-{round}")).await);
            stop.store(true, Relaxed);
            let f = tokio::task::spawn_blocking(move || flooder.join().expect("the flood ends"))
                .await
                .unwrap();
            got.sessions = got.sessions.max(f.sessions);
            got.sockets = got.sockets.max(f.sockets);
            got.bets_sent += f.bets_sent;
        }
        quiet.sort_by(|a, b| a.total_cmp(b));
        flooded.sort_by(|a, b| a.total_cmp(b));
        let (q99, f99) = (pct(&quiet, 0.99), pct(&flooded, 0.99));
        attempts.push(format!("quiet p99 {q99:.2} ms, flooded p99 {f99:.2} ms"));
        if f99 <= 2.0 * q99 || attempts.len() == 3 {
            break (quiet, flooded);
        }
    };
    let created = got.sessions;
    let m = &n.node.metrics().node;
    let refused_sessions = m.limit_refusals(Limit::SessionsPerUser)
        + m.limit_refusals(Limit::SessionsPerAddress)
        + m.limit_refusals(Limit::Setups);
    let refused_sockets =
        m.limit_refusals(Limit::PendingWebSockets) + m.limit_refusals(Limit::WebSocketsPerAddress);
    let defaults = LimitsConfig::default();
    assert!(
        created <= u64::from(defaults.sessions_per_user),
        "{created} sessions got through"
    );
    assert!(refused_sessions > 0 && refused_sockets > 0);
    assert!(
        got.sockets <= u64::from(defaults.websockets_per_address),
        "{} sockets got through",
        got.sockets
    );

    // No good player lost or repeated an event: each one's seqs run without a gap up to the
    // table's last seq.
    let last = snapshot(&n).await["last_seq"].as_u64().unwrap();
    for (i, p) in players.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let msgs: Vec<Value> = p.got().into_iter().map(|g| g.msg).collect();
            let welcome = msgs.iter().find(|m| m["type"] == "welcome").unwrap()["seq"]
                .as_u64()
                .unwrap();
            let s = seqs(&msgs);
            if s.last() == Some(&last) {
                let expected: Vec<u64> = (welcome + 1..=last).collect();
                assert_eq!(s, expected, "player {i} saw a gap or a repeat");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "player {i} stopped at {:?} of {last}",
                s.last()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(p.is_closed().is_none(), "player {i} was closed");
    }

    let (q50, q99) = (pct(&quiet, 0.5), pct(&quiet, 0.99));
    let (f50, f99) = (pct(&flooded, 0.5), pct(&flooded, 0.99));
    eprintln!(
        "bet.accepted latency over {} bets each: quiet p50 {q50:.2} ms p99 {q99:.2} ms; \
         flood p50 {f50:.2} ms p99 {f99:.2} ms; flood: {created} sessions and {} sockets admitted, \
         {} bets sent, {refused_sessions} setups and {refused_sockets} sockets refused",
        quiet.len(),
        got.sockets,
        got.bets_sent,
    );
    eprintln!("attempts: {attempts:?}");
    assert!(
        f99 <= 2.0 * q99,
        "bet latency p99 {f99:.2} ms under the flood, {q99:.2} ms without: more than 2x in every attempt ({attempts:?})"
    );
    for p in players {
        p.close().await;
    }
    n.stop().await;
}
