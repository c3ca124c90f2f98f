//! Demo mode stays a demo: `POST /api/v1/demo/token` hands player tokens for the demo tables to
//! anyone, dealer tokens only to clients in `[auth] demo_dealer_networks` (loopback by default)
//! and never through the proxy's plain listener, operator tokens never, and the node picks every
//! user name. Without `[auth] demo = true` the route does not exist.

mod common;

use common::TestNode;
use common::netns::Netns;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tablecast::auth::{TokenRole, Tokens};
use tablecast::config::Config;

const ROUTE: &str = "/api/v1/demo/token";

async fn ask(n: &TestNode, base: &str, body: Value) -> (StatusCode, String) {
    let r = n
        .client
        .post(format!("{base}{ROUTE}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let is_text = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain") || v.starts_with("application/json"));
    assert!(is_text, "{body}: content type");
    (status, r.text().await.unwrap())
}

fn verify(token_reply: &str) -> tablecast::auth::Identity {
    let body: Value = serde_json::from_str(token_reply).unwrap();
    Tokens::from_secret(common::TEST_SECRET.as_bytes())
        .verify(body["token"].as_str().unwrap())
        .unwrap()
}

/// Serves the demo table and `vip`, a table that is not a demo table.
fn with_vip(c: &mut Config) {
    c.tables = ["demo", "vip"]
        .iter()
        .map(|id| toml::from_str(&format!("id = \"{id}\"")).unwrap())
        .collect();
}

#[tokio::test]
async fn on_this_machine_dealers_and_players_get_tokens_named_by_the_node() {
    let n = TestNode::start_with(with_vip).await;
    let base = n.node.base_url();

    let (status, body) = ask(&n, &base, json!({ "role": "dealer", "table": "demo" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let dealer = verify(&body);
    assert_eq!(dealer.role, TokenRole::Dealer);
    assert!(dealer.user.as_str().starts_with("dealer-"), "{dealer:?}");

    let (status, body) = ask(&n, &base, json!({ "role": "player", "table": "demo" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let player = verify(&body);
    assert!(player.user.as_str().starts_with("player-"), "{player:?}");
    let (_, again) = ask(&n, &base, json!({ "role": "player", "table": "demo" })).await;
    assert_ne!(
        verify(&again).user,
        player.user,
        "every demo player gets its own name"
    );
    n.stop().await;
}

/// The shipped config serves HTTPS: the TLS listener knows the peer address too.
#[tokio::test]
async fn over_https_a_dealer_on_this_machine_gets_a_token() {
    let n = TestNode::start_with(|c| c.http.tls = true).await;
    let base = n.node.base_url();
    assert!(base.starts_with("https://"), "{base}");
    let (status, body) = ask(&n, &base, json!({ "role": "dealer", "table": "demo" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(verify(&body).role, TokenRole::Dealer);
    n.stop().await;
}

#[tokio::test]
async fn a_caller_cannot_pick_the_user_name() {
    let n = TestNode::start().await;
    let base = n.node.base_url();
    for body in [
        json!({ "role": "player", "table": "demo", "user": "alice" }),
        json!({ "role": "dealer", "table": "demo", "user": "dealer-1" }),
        json!({ "role": "player", "table": "demo", "user": "" }),
        json!({ "role": "player", "table": "demo", "user": null }),
    ] {
        let (status, text) = ask(&n, &base, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(text.contains("the node picks"), "{body}: {text}");
    }
    n.stop().await;
}

#[tokio::test]
async fn demo_tokens_only_for_demo_tables() {
    let n = TestNode::start_with(|c| {
        with_vip(c);
        // `ghost` is a demo table this node does not serve.
        c.auth.demo_tables = ["demo", "ghost"]
            .iter()
            .map(|t| tablecast::ids::TableId::parse(t).unwrap())
            .collect();
    })
    .await;
    let base = n.node.base_url();
    for role in ["player", "dealer"] {
        let (status, text) = ask(&n, &base, json!({ "role": role, "table": "vip" })).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role} on vip: {text}");
        assert!(text.contains("not a demo table"), "{text}");
        assert!(text.contains("tablecast token"), "{text}");

        let (status, text) = ask(&n, &base, json!({ "role": role, "table": "nope" })).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role} on nope: {text}");

        let (status, text) = ask(&n, &base, json!({ "role": role, "table": "ghost" })).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{role} on ghost: {text}");
        assert!(text.contains("no table ghost"), "{text}");
    }
    n.stop().await;
}

#[tokio::test]
async fn operators_and_bad_requests_are_refused() {
    let n = TestNode::start().await;
    let base = n.node.base_url();
    let cases = [
        (
            json!({ "role": "operator", "table": "demo" }),
            StatusCode::FORBIDDEN,
        ),
        (
            json!({ "role": "king", "table": "demo" }),
            StatusCode::BAD_REQUEST,
        ),
        (json!({ "table": "demo" }), StatusCode::BAD_REQUEST),
    ];
    for (body, status) in cases {
        let (got, text) = ask(&n, &base, body.clone()).await;
        assert_eq!(got, status, "{body}: {text}");
    }
    n.stop().await;
}

#[tokio::test]
async fn without_demo_mode_there_is_no_route() {
    let n = TestNode::start_with(|c| c.auth.demo = false).await;
    let r = n
        .client
        .post(n.url(ROUTE))
        .json(&json!({ "role": "player", "table": "demo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    n.stop().await;
}

#[tokio::test]
async fn a_dealer_outside_the_allowed_networks_is_refused_and_told_what_to_do() {
    // Loopback is not in the list, so this test's own client is "remote".
    let n = TestNode::start_with(|c| {
        c.auth.demo_dealer_networks = vec!["192.0.2.0/24".parse().unwrap()];
    })
    .await;
    let base = n.node.base_url();
    let (status, text) = ask(&n, &base, json!({ "role": "dealer", "table": "demo" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("127.0.0.1 is not"), "{text}");
    assert!(text.contains("tablecast token --role dealer"), "{text}");
    assert!(text.contains("demo_dealer_networks"), "{text}");
    // Players are not limited by network.
    let (status, text) = ask(&n, &base, json!({ "role": "player", "table": "demo" })).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    n.stop().await;
}

#[tokio::test]
async fn no_dealer_tokens_through_the_proxys_plain_listener() {
    let n = TestNode::start_with(|c| {
        c.http.plain_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let plain = format!("http://{}", n.node.plain_addr().unwrap());
    let (status, text) = ask(&n, &plain, json!({ "role": "dealer", "table": "demo" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("plain_listen"), "{text}");
    let (status, text) = ask(&n, &plain, json!({ "role": "player", "table": "demo" })).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // The same loopback client on the main listener is a local dealer.
    let (status, text) = ask(
        &n,
        &n.node.base_url(),
        json!({ "role": "dealer", "table": "demo" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    n.stop().await;
}

/// A real client on another address: inside a network namespace, over a veth pair, to a node
/// listening on the pair's root-side address. With the default allowlist it gets a player token
/// and no dealer token.
#[tokio::test]
async fn a_dealer_from_another_machine_is_refused() {
    let netns = match Netns::create() {
        Ok(netns) => netns,
        Err(why) => {
            eprintln!("SKIPPED a_dealer_from_another_machine_is_refused: {why}");
            return;
        }
    };
    let host = netns.host_ip();
    let n = TestNode::start_with(|c| {
        c.http.listen = std::net::SocketAddr::new(host, 0);
        assert_eq!(
            c.auth.demo_dealer_networks,
            Config::default().auth.demo_dealer_networks,
            "the default allowlist"
        );
    })
    .await;
    let url = format!("http://{}{ROUTE}", n.node.http_addr());
    let deadline = Instant::now() + Duration::from_secs(20);
    let post = |body: &'static str| {
        let url = url.clone();
        let netns = &netns;
        async move {
            netns
                .curl(
                    &[
                        "-X",
                        "POST",
                        "-H",
                        "Content-Type: application/json",
                        "-d",
                        body,
                        &url,
                    ],
                    deadline,
                )
                .await
        }
    };

    let (status, text) = post(r#"{"role":"dealer","table":"demo"}"#).await;
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains(&format!("{} is not", netns.peer_ip())),
        "names the client's address: {text}"
    );
    assert!(text.contains("tablecast token"), "{text}");

    // A forged X-Forwarded-For changes nothing.
    let (status, text) = netns
        .curl(
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-H",
                "X-Forwarded-For: 127.0.0.1",
                "-H",
                "X-Real-IP: 127.0.0.1",
                "-H",
                "Forwarded: for=127.0.0.1",
                "-d",
                r#"{"role":"dealer","table":"demo"}"#,
                &url,
            ],
            deadline,
        )
        .await;
    assert_eq!(status, 403, "{text}");

    let (status, text) = post(r#"{"role":"operator","table":"demo"}"#).await;
    assert_eq!(status, 403, "{text}");

    // A phone on the LAN still gets a player token.
    let (status, text) = post(r#"{"role":"player","table":"demo"}"#).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(verify(&text).role, TokenRole::Player);
    n.stop().await;
}
