//! `[limits]` from outside: each cap and rate answers `429` with `Retry-After` once it is
//! reached, gives the slot back when the session or socket ends, and is counted in
//! `tablecast_limit_refusals_total`. Bets stay rate-limited across a reconnect.

mod common;

use common::control::{Player, WsPlayer, hello, token_for};
use common::{TestNode, offer};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use serde_json::json;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tablecast::auth::TokenRole;
use tablecast::config::LimitsConfig;
use tablecast::limits::Limit;

/// A node with the test defaults (no caps in the way), then `limits`.
async fn node(limits: impl FnOnce(&mut LimitsConfig)) -> TestNode {
    TestNode::start_with(|c| {
        limits(&mut c.limits);
        c.media.connect_timeout_secs = 120;
    })
    .await
}

/// An HTTP client whose connections come from `ip` (any 127.0.0.0/8 address is this machine).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn post_whep(n: &TestNode, client: &reqwest::Client, token: &str) -> reqwest::Response {
    client
        .post(n.url("/whep/demo"))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header(CONTENT_TYPE, "application/sdp")
        .body(offer("recvonly"))
        .send()
        .await
        .unwrap()
}

async fn assert_429(r: reqwest::Response, key: &str) {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()[RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "Retry-After {retry}");
    let text = r.text().await.unwrap();
    assert!(text.contains(key), "names the config key {key}: {text}");
}

fn refusals(n: &TestNode, limit: Limit) -> u64 {
    n.node.metrics().node.limit_refusals(limit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_user_are_capped_and_given_back() {
    let n = node(|l| l.sessions_per_user = 2).await;
    let c = client_from("127.0.0.1");
    let alice = token_for(&n, TokenRole::Player, "alice");
    let first = post_whep(&n, &c, &alice).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first = first.headers()[LOCATION].to_str().unwrap().to_owned();
    assert_eq!(
        post_whep(&n, &c, &alice).await.status(),
        StatusCode::CREATED
    );
    assert_429(post_whep(&n, &c, &alice).await, "sessions_per_user").await;
    // Another user is not held back by alice.
    let bob = token_for(&n, TokenRole::Player, "bob");
    assert_eq!(post_whep(&n, &c, &bob).await.status(), StatusCode::CREATED);
    // Closing one gives its slot back.
    let r = c
        .delete(n.url(&first))
        .header(AUTHORIZATION, format!("Bearer {alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        post_whep(&n, &c, &alice).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(refusals(&n, Limit::SessionsPerUser), 1);
    let metrics = n.node.metrics().render();
    assert!(
        metrics.contains("tablecast_limit_refusals_total{limit=\"sessions_per_user\"} 1"),
        "{metrics}"
    );
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_address_and_setups_per_second_are_capped_per_address() {
    let n = node(|l| l.sessions_per_address = 3).await;
    let flooder = client_from("127.0.0.2");
    for i in 0..3 {
        let t = token_for(&n, TokenRole::Player, &format!("u{i}"));
        assert_eq!(
            post_whep(&n, &flooder, &t).await.status(),
            StatusCode::CREATED
        );
    }
    let t = token_for(&n, TokenRole::Player, "u9");
    assert_429(post_whep(&n, &flooder, &t).await, "sessions_per_address").await;
    // Another address is not held back.
    let neighbour = client_from("127.0.0.3");
    assert_eq!(
        post_whep(&n, &neighbour, &t).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(refusals(&n, Limit::SessionsPerAddress), 1);
    n.stop().await;

    let n = node(|l| {
        l.setups_burst = 3;
        l.setups_per_sec = 0.2;
    })
    .await;
    let c = client_from("127.0.0.4");
    let t = token_for(&n, TokenRole::Player, "u1");
    for _ in 0..3 {
        assert_eq!(post_whep(&n, &c, &t).await.status(), StatusCode::CREATED);
    }
    let r = post_whep(&n, &c, &t).await;
    assert_eq!(r.headers()[RETRY_AFTER], "5", "one setup every 5 s");
    assert_429(r, "setups_per_sec").await;
    assert_eq!(
        post_whep(&n, &client_from("127.0.0.5"), &t).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(refusals(&n, Limit::Setups), 1);
    n.stop().await;
}

/// A WebSocket to the demo table from `ip`; the refusal's status if the node refuses it.
async fn ws_from(n: &TestNode, ip: &str) -> Result<WsPlayer, u16> {
    WsPlayer::connect_from(n, "demo", ip.parse().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_are_capped_per_address_and_while_they_say_nothing() {
    let n = node(|l| {
        l.websockets_per_address = 3;
        l.pending_websockets_per_address = 2;
    })
    .await;
    let silent1 = ws_from(&n, "127.0.0.6").await.expect("first");
    let silent2 = ws_from(&n, "127.0.0.6").await.expect("second");
    assert_eq!(
        ws_from(&n, "127.0.0.6").await.err(),
        Some(429),
        "two silent sockets"
    );
    assert_eq!(refusals(&n, Limit::PendingWebSockets), 1);
    // One says hello: its silent slot is free again.
    silent1.send(hello(&token_for(&n, TokenRole::Player, "p1"), None));
    let deadline = Instant::now() + Duration::from_secs(10);
    let third = loop {
        match ws_from(&n, "127.0.0.6").await {
            Ok(p) => break p,
            Err(429) => {}
            Err(other) => panic!("{other}"),
        }
        assert!(Instant::now() < deadline, "the hello never freed a slot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        ws_from(&n, "127.0.0.6").await.err(),
        Some(429),
        "three open sockets"
    );
    assert!(refusals(&n, Limit::WebSocketsPerAddress) >= 1);
    // Another address is not held back.
    ws_from(&n, "127.0.0.7")
        .await
        .expect("another address")
        .close()
        .await;
    // Closing one gives its slot back.
    silent2.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(p) = ws_from(&n, "127.0.0.6").await {
            p.close().await;
            break;
        }
        assert!(Instant::now() < deadline, "closing never freed a slot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    third.close().await;
    silent1.close().await;
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_does_not_refill_a_players_bets() {
    let n = TestNode::start_with(|c| {
        let table: toml::Table =
            toml::from_str("id = \"demo\"\nbetting_window_secs = 600\n").unwrap();
        c.tables = vec![table];
        c.control.bets_burst = 3;
        c.control.bets_per_sec = 0.01;
    })
    .await;
    let (status, body) = common::control::dealer(&n, "open", None).await;
    assert_eq!(status, 200, "{body}");
    let bet = |id: &str| json!({"type": "bet.place", "id": id, "round": 1, "spot": "banker", "amount": 100});

    for (transport, user) in [("ws", "wsplayer"), ("dc", "dcplayer")] {
        let connect = || async {
            match transport {
                "ws" => Player::ws(&n, user, None).await,
                _ => Player::dc(&n, user, None).await,
            }
        };
        let p = connect().await;
        p.wait_for("welcome", |m| m["type"] == "welcome").await;
        for i in 0..3 {
            p.send(bet(&format!("b{i}")));
        }
        for i in 0..3 {
            let id = format!("b{i}");
            p.wait_for("accepted", |m| m["type"] == "bet.accepted" && m["id"] == id)
                .await;
        }
        p.close().await;
        // A new connection of the same player finds the bucket as it was left: empty.
        let p = connect().await;
        p.wait_for("welcome", |m| m["type"] == "welcome").await;
        p.send(bet("b3"));
        let refused = p
            .wait_for("refusal", |m| m["id"] == "b3" && m["type"] != "welcome")
            .await;
        assert_eq!(refused["type"], "error", "{transport}: {refused}");
        assert_eq!(refused["code"], "rate_limited", "{transport}: {refused}");
        p.close().await;
    }
    n.stop().await;
}
