//! TURN servers for players whose network blocks UDP: with `[turn]`, WHIP and WHEP `201`
//! replies (and an `OPTIONS` carrying the token) list each server as an RFC 9725 §4.6 `Link`
//! header, with credentials of the TURN REST API scheme that the TURN server can check with the
//! shared secret alone. Without `[turn]` there are none, and a bad `[turn]` stops the node with
//! what to fix. The secret itself is in no reply and no log line. Chromium playing through a
//! real coturn is `tests/browser/turn.test.mjs`.

mod common;

use base64::Engine as _;
use common::process::{NodeOptions, NodeProcess};
use common::{NodeRef, TestNode, offer};
use hmac::Mac as _;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tablecast::auth::TokenRole;
use tablecast::config::{Config, TurnSecret};

const SECRET: &str = "turn-test-shared-secret-5d1c0e";
const URLS: [&str; 3] = [
    "turn:198.18.0.1:3478?transport=udp",
    "turn:198.18.0.1:3478?transport=tcp",
    "turns:198.18.0.1:443?transport=tcp",
];

/// One `Link` ice-server entry as a client reads it.
#[derive(Debug)]
struct IceServer {
    url: String,
    username: String,
    credential: String,
    credential_type: String,
}

/// Every `Link: <url>; rel="ice-server"; k="v"…` of a reply, with its parameters.
fn ice_servers(headers: &HeaderMap) -> Vec<IceServer> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .map(|v| v.to_str().expect("Link is text"))
        .map(|link| {
            let mut parts = link.split("; ");
            let url = parts
                .next()
                .and_then(|u| u.strip_prefix('<'))
                .and_then(|u| u.strip_suffix('>'))
                .unwrap_or_else(|| panic!("Link starts with <url>: {link}"))
                .to_owned();
            let mut params = std::collections::BTreeMap::new();
            for p in parts {
                let (k, v) = p
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{p:?} is k=v in {link}"));
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or_else(|| panic!("{k} is a quoted string in {link}"));
                params.insert(k.to_owned(), v.to_owned());
            }
            assert_eq!(params["rel"], "ice-server", "{link}");
            IceServer {
                url,
                username: params["username"].clone(),
                credential: params["credential"].clone(),
                credential_type: params["credential-type"].clone(),
            }
        })
        .collect()
}

/// `base64(HMAC-SHA1(secret, username))`, computed here, not by the node's code.
fn hmac_sha1(secret: &str, username: &str) -> String {
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Checks every entry against the configured URLs, the user, `ttl` and the secret. Returns
/// the expiry it carried, less the time before the request.
fn check_credentials(
    what: &str,
    servers: &[IceServer],
    user: &str,
    ttl: u64,
    asked_at: u64,
) -> i64 {
    let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
    assert_eq!(urls, URLS, "{what}: one Link per [turn] url, in order");
    let first = &servers[0];
    let (expiry, named) = first
        .username
        .split_once(':')
        .unwrap_or_else(|| panic!("{what}: username is <expiry>:<user>: {first:?}"));
    let expiry: u64 = expiry.parse().expect("expiry is unix seconds");
    assert_eq!(named, user, "{what}: the token's user");
    let slack = expiry as i64 - (asked_at + ttl) as i64;
    assert!(
        (-2..=5).contains(&slack),
        "{what}: expiry {expiry} is now + ttl ({asked_at} + {ttl}), off by {slack} s"
    );
    for s in servers {
        assert_eq!(s.username, first.username, "{what}: one set of credentials");
        assert_eq!(s.credential_type, "password");
        assert_eq!(
            s.credential,
            hmac_sha1(SECRET, &s.username),
            "{what}: the credential is HMAC-SHA1(secret, username)"
        );
        assert_ne!(s.credential, hmac_sha1("another secret", &s.username));
    }
    println!(
        "{what}: {} servers, username {:?}, expires in {} s (ttl {ttl}, off by {slack} s)",
        servers.len(),
        first.username,
        expiry - asked_at
    );
    slack
}

async fn post_offer(
    node: &impl NodeRef,
    path: &str,
    token: &str,
    direction: &str,
) -> reqwest::Response {
    node.client()
        .post(node.url(path))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header(CONTENT_TYPE, "application/sdp")
        .body(offer(direction))
        .send()
        .await
        .expect("POST")
}

async fn options(node: &impl NodeRef, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = node
        .client()
        .request(reqwest::Method::OPTIONS, node.url(path));
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    req.send().await.expect("OPTIONS")
}

fn assert_secret_absent(what: &str, headers: &HeaderMap, body: &str) {
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(!value.contains(SECRET), "{what}: {name} holds the secret");
    }
    assert!(!body.contains(SECRET), "{what}: the body holds the secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_replies_carry_each_turn_server_with_credentials_for_the_user() {
    let node = NodeProcess::spawn_with(NodeOptions::new("turn", ""), |config| {
        let mut turn = toml::Table::new();
        turn.insert(
            "urls".into(),
            toml::Value::Array(URLS.iter().map(|u| (*u).into()).collect()),
        );
        turn.insert("secret".into(), SECRET.into());
        turn.insert("ttl_secs".into(), 600.into());
        config.insert("turn".into(), turn.into());
    });
    node.wait_ready().await;
    let dealer = node.issue_token(TokenRole::Dealer, "demo", "dealer-7");
    let player = node.issue_token(TokenRole::Player, "demo", "player-42");

    for (what, path, token, user, direction) in [
        ("WHIP 201", "/whip/demo", &dealer, "dealer-7", "sendonly"),
        ("WHEP 201", "/whep/demo", &player, "player-42", "recvonly"),
    ] {
        let asked_at = unix_now();
        let r = post_offer(&node, path, token, direction).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{what}");
        let expose = r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            expose.split(',').any(|h| h.trim() == "Link"),
            "{what}: browsers may read Link: {expose}"
        );
        let headers = r.headers().clone();
        let body = r.text().await.unwrap();
        check_credentials(what, &ice_servers(&headers), user, 600, asked_at);
        assert_secret_absent(what, &headers, &body);

        // The same servers before the POST, to the same token: what tablecast.js creates its
        // peer connection with.
        let asked_at = unix_now();
        let r = options(&node, path, Some(token)).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{what} OPTIONS");
        check_credentials(
            &format!("{what} OPTIONS"),
            &ice_servers(r.headers()),
            user,
            600,
            asked_at,
        );
        assert_secret_absent(what, r.headers(), "");

        // A CORS pre-flight carries no token, and gets no credentials.
        let r = options(&node, path, None).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(
            ice_servers(r.headers()).is_empty(),
            "{what}: none without a token"
        );
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
    }

    // A token for another table learns nothing.
    let other = node.issue_token(TokenRole::Player, "vip", "player-42");
    let r = options(&node, "/whep/demo", Some(&other)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(ice_servers(r.headers()).is_empty());

    let log = std::fs::read_to_string(node.log_path()).unwrap();
    assert!(log.contains("TURN"), "the node says TURN is on:\n{log}");
    assert!(!log.contains(SECRET), "the secret is in the log:\n{log}");
    node.terminate();
    node.wait_exit(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credentials_expire_after_the_configured_lifetime() {
    for ttl in [60, 7200] {
        let n = TestNode::start_with(|c| {
            c.turn.urls = URLS.iter().map(|u| (*u).to_owned()).collect();
            c.turn.secret = TurnSecret::new(SECRET);
            c.turn.ttl_secs = ttl;
        })
        .await;
        let token = n.issue_token(TokenRole::Player, "demo", "p1");
        let asked_at = unix_now();
        let r = post_offer(&n, "/whep/demo", &token, "recvonly").await;
        assert_eq!(r.status(), StatusCode::CREATED);
        check_credentials(
            &format!("WHEP 201 with ttl_secs = {ttl}"),
            &ice_servers(r.headers()),
            "p1",
            ttl,
            asked_at,
        );
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_turn_sends_no_ice_server_links() {
    let n = TestNode::start().await;
    let dealer = n.issue_token(TokenRole::Dealer, "demo", "d1");
    let player = n.issue_token(TokenRole::Player, "demo", "p1");
    let r = post_offer(&n, "/whip/demo", &dealer, "sendonly").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers().get("link").is_none(), "{:?}", r.headers());
    let r = post_offer(&n, "/whep/demo", &player, "recvonly").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers().get("link").is_none(), "{:?}", r.headers());
    let r = options(&n, "/whep/demo", Some(&player)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.headers().get("link").is_none(), "{:?}", r.headers());
    println!("no [turn]: no Link on WHIP 201, WHEP 201 or OPTIONS");
    n.stop().await;
}

#[test]
fn a_bad_turn_section_names_the_key_and_the_fix() {
    let cases = [
        (
            "[turn]\nurls = [\"stun:198.18.0.1:3478\"]\nsecret = \"s\"\n",
            "turn.urls",
            "use turn: or turns:",
        ),
        (
            "[turn]\nurls = [\"https://turn.example.com\"]\nsecret = \"s\"\n",
            "turn.urls",
            "use turn: or turns:",
        ),
        (
            "[turn]\nurls = [\"turns:turn.example.com:443?transport=udp\"]\nsecret = \"s\"\n",
            "turn.urls",
            "?transport=tcp",
        ),
        (
            "[turn]\nurls = [\"turn:turn.example.com:3478\"]\n",
            "turn.secret",
            "static-auth-secret",
        ),
        (
            "[turn]\nurls = [\"turn:turn.example.com:3478\"]\nsecret = \"  \"\n",
            "turn.secret",
            "must not be empty",
        ),
        (
            "[turn]\nsecret = \"s\"\n",
            "turn.secret",
            "turn.urls is empty",
        ),
        (
            "[turn]\nurls = [\"turn:t.example.com\"]\nsecret = \"s\"\nttl_secs = 5\n",
            "turn.ttl_secs",
            "60 to 86400",
        ),
    ];
    for (text, key, fix) in cases {
        let e = Config::from_toml(text).unwrap_err().to_string();
        println!("{e}");
        assert!(e.contains(key) && e.contains(fix), "{text:?}: {e}");
        assert!(!e.contains("\"s\""), "the secret is not echoed: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_bad_turn_url_does_not_start_and_says_why() {
    let node = NodeProcess::spawn_with(NodeOptions::new("badturn", ""), |config| {
        let mut turn = toml::Table::new();
        turn.insert(
            "urls".into(),
            toml::Value::Array(vec!["stun:turn.example.com:3478".into()]),
        );
        turn.insert("secret".into(), SECRET.into());
        config.insert("turn".into(), turn.into());
    });
    let status = node.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success(), "{status}");
    let log = node.tail_log();
    assert!(
        log.contains("turn.urls") && log.contains("use turn: or turns:"),
        "{log}"
    );
    assert!(!log.contains(SECRET), "{log}");
    println!(
        "bad [turn] url: exit {status}, {}",
        log.lines().find(|l| l.contains("turn.urls")).unwrap_or("")
    );
}
