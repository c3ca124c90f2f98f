//! The node refuses strangers: every table-scoped route wants a good token before it says
//! anything about the table, and a WHIP/WHEP session answers only to the token that opened it,
//! its user, or an operator of its table. Each hole is tried from outside, over HTTP and the
//! WebSocket, and refused with the documented status.

mod common;

use common::control::{WsPlayer, hello};
use common::{TEST_SECRET, TestNode, offer};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token signed with the test node's secret, with any claims.
fn signed(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .unwrap()
}

fn token(user: &str, role: &str, table: &str, exp: u64) -> String {
    signed(json!({ "sub": user, "role": role, "table": table, "iat": now_secs(), "exp": exp }))
}

fn fresh(user: &str, role: &str, table: &str) -> String {
    token(user, role, table, now_secs() + 600)
}

async fn send(
    n: &TestNode,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, String)>,
) -> reqwest::Response {
    let mut req = n.client.request(method, n.url(path));
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some((ct, body)) = body {
        req = req.header(CONTENT_TYPE, ct).body(body);
    }
    req.send().await.expect("request")
}

/// A request's method, path and body (content type and text).
type Route = (Method, String, Option<(&'static str, String)>);

/// Every table-scoped route, for `table`, with a body that would pass its later checks.
fn routes(table: &str) -> Vec<Route> {
    let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n".to_owned();
    vec![
        (
            Method::POST,
            format!("/whip/{table}"),
            Some((SDP, offer("sendonly"))),
        ),
        (
            Method::POST,
            format!("/whep/{table}"),
            Some((SDP, offer("recvonly"))),
        ),
        (
            Method::PATCH,
            format!("/whip/{table}/00aaaaaaaaaaaaaaaaaaaaaaaa"),
            Some((SDPFRAG, frag.clone())),
        ),
        (
            Method::PATCH,
            format!("/whep/{table}/00aaaaaaaaaaaaaaaaaaaaaaaa"),
            Some((SDPFRAG, frag)),
        ),
        (
            Method::DELETE,
            format!("/whip/{table}/00aaaaaaaaaaaaaaaaaaaaaaaa"),
            None,
        ),
        (
            Method::DELETE,
            format!("/whep/{table}/00aaaaaaaaaaaaaaaaaaaaaaaa"),
            None,
        ),
        (Method::GET, format!("/api/v1/tables/{table}"), None),
        (
            Method::POST,
            format!("/api/v1/tables/{table}/round/open"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/tables/{table}/round/close"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/tables/{table}/round/result"),
            Some(("application/json", r#"{"outcome":"banker"}"#.into())),
        ),
        (
            Method::POST,
            format!("/api/v1/tables/{table}/round/void"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/tables/{table}/sessions"),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/v1/tables/{table}/sessions/00aaaaaaaaaaaaaaaaaaaaaaaa"),
            None,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_good_token_no_route_says_whether_a_table_exists() {
    let n = TestNode::start().await;
    let expired = token("u1", "operator", "*", 2);
    let foreign = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": "u1", "role": "operator", "table": "*", "exp": now_secs() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .unwrap();
    for table in ["demo", "nosuchtable", "bad%20id"] {
        for (method, path, body) in routes(table) {
            for (what, t) in [
                ("no token", None),
                ("garbage", Some("garbage")),
                ("expired", Some(expired.as_str())),
                ("another secret", Some(foreign.as_str())),
            ] {
                // DELETE/PATCH of a session let an expired token through to the ownership check.
                let session_route = matches!(method, Method::PATCH | Method::DELETE)
                    && (path.starts_with("/whip") || path.starts_with("/whep"));
                if what == "expired" && session_route {
                    continue;
                }
                let r = send(&n, method.clone(), &path, t, body.clone()).await;
                assert_eq!(
                    r.status(),
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} with {what}"
                );
                assert!(
                    r.headers().contains_key("www-authenticate"),
                    "{method} {path}"
                );
                let text = r.text().await.unwrap();
                assert!(!text.contains("no table"), "{method} {path}: {text}");
            }
        }
    }

    // A player of another table gets the same 403 for a table that exists and one that does not.
    let other = fresh("u1", "player", "other");
    for table in ["demo", "nosuchtable"] {
        let r = send(
            &n,
            Method::GET,
            &format!("/api/v1/tables/{table}"),
            Some(&other),
            None,
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{table}");
    }
    // Only a caller entitled to a table learns it is not here.
    let op = fresh("op", "operator", "*");
    let r = send(
        &n,
        Method::GET,
        "/api/v1/tables/nosuchtable",
        Some(&op),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = send(
        &n,
        Method::POST,
        "/whep/nosuchtable",
        Some(&op),
        Some((SDP, offer("recvonly"))),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    n.stop().await;
}

/// Waits for the socket's `error` event, and for it to close.
async fn refused_on_ws(p: &WsPlayer) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = p.got();
        if let Some(e) = got.iter().find(|g| g.msg["type"] == "error")
            && p.is_closed().is_some()
        {
            return e.msg.clone();
        }
        assert!(Instant::now() < deadline, "never refused: {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_judges_the_token_before_the_table() {
    let n = TestNode::start().await;
    for table in ["demo", "nosuchtable"] {
        for bad in ["garbage".to_owned(), token("u1", "player", table, 2)] {
            let p = WsPlayer::connect(&n, table).await;
            p.send(hello(&bad, None));
            let e = refused_on_ws(&p).await;
            assert_eq!(e["code"], "unauthorized", "{table}: {e}");
            p.close().await;
        }
        // A good token for another table.
        let p = WsPlayer::connect(&n, table).await;
        p.send(hello(&fresh("u1", "player", "elsewhere"), None));
        assert_eq!(refused_on_ws(&p).await["code"], "unauthorized");
        p.close().await;
    }
    // A good token for the missing table itself is told the table is not here.
    let p = WsPlayer::connect(&n, "nosuchtable").await;
    p.send(hello(&fresh("u1", "player", "nosuchtable"), None));
    let e = refused_on_ws(&p).await;
    assert_eq!(e["code"], "unknown_table", "{e}");
    p.close().await;
    // And the real table still works.
    let p = WsPlayer::connect(&n, "demo").await;
    p.send(hello(&fresh("u1", "player", "demo"), None));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.got().iter().any(|g| g.msg["type"] == "welcome") {
        assert!(Instant::now() < deadline, "no welcome: {:?}", p.got());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.close().await;
    n.stop().await;
}

/// Opens a WHEP session (it never connects; the node keeps it until its connect timeout).
async fn open(n: &TestNode, token: &str) -> String {
    let r = send(
        n,
        Method::POST,
        "/whep/demo",
        Some(token),
        Some((SDP, offer("recvonly"))),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    r.headers()[LOCATION].to_str().unwrap().to_owned()
}

async fn patch(n: &TestNode, location: &str, token: &str) -> StatusCode {
    let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n";
    n.client
        .patch(n.url(location))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header(CONTENT_TYPE, SDPFRAG)
        .header("if-match", "\"nope\"")
        .body(frag)
        .send()
        .await
        .unwrap()
        .status()
}

async fn delete(n: &TestNode, location: &str, token: &str) -> StatusCode {
    send(n, Method::DELETE, location, Some(token), None)
        .await
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_answers_only_to_its_opener_its_user_or_an_operator() {
    let n = TestNode::start_with(|c| {
        c.auth.leeway_secs = 0;
        c.media.connect_timeout_secs = 120;
    })
    .await;
    let alice = fresh("alice", "player", "demo");
    let session = open(&n, &alice).await;

    let bob = fresh("bob", "player", "demo");
    let bob_dealer = fresh("bob", "dealer", "demo");
    let other_table = fresh("alice", "player", "other");
    let other_operator = fresh("op", "operator", "other");
    let alice_expired = token("alice", "player", "demo", 2);
    let carol_expired = token("carol", "player", "demo", 2);

    // Another user, even a dealer of the table: as if there were no such session.
    for t in [&bob, &bob_dealer] {
        assert_eq!(patch(&n, &session, t).await, StatusCode::NOT_FOUND);
        assert_eq!(delete(&n, &session, t).await, StatusCode::NOT_FOUND);
    }
    // The same user's token for another table, or an operator of another table.
    for t in [&other_table, &other_operator] {
        assert_eq!(patch(&n, &session, t).await, StatusCode::FORBIDDEN);
        assert_eq!(delete(&n, &session, t).await, StatusCode::FORBIDDEN);
    }
    // Expired tokens that did not open this session, even the same user's.
    for t in [&alice_expired, &carol_expired] {
        assert_eq!(patch(&n, &session, t).await, StatusCode::NOT_FOUND);
        assert_eq!(delete(&n, &session, t).await, StatusCode::NOT_FOUND);
    }
    // The refusals above are the same as for a session that does not exist.
    let missing = session.rsplit_once('/').unwrap().0.to_owned() + "/00ffffffffffffffffffffffff";
    assert_eq!(delete(&n, &missing, &alice).await, StatusCode::NOT_FOUND);

    // Its opener may (a stale ETag: the node got as far as the session itself).
    assert_eq!(
        patch(&n, &session, &alice).await,
        StatusCode::PRECONDITION_FAILED
    );
    // A fresh token of the same user may too.
    let alice_again = fresh("alice", "player", "demo");
    assert_eq!(delete(&n, &session, &alice_again).await, StatusCode::OK);

    // An operator of the table may close anyone's session.
    let s2 = open(&n, &bob).await;
    let operator = fresh("op", "operator", "demo");
    assert_eq!(delete(&n, &s2, &operator).await, StatusCode::OK);
    assert_eq!(delete(&n, &s2, &operator).await, StatusCode::NOT_FOUND);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_may_still_close_the_session_it_opened() {
    let n = TestNode::start_with(|c| {
        c.auth.leeway_secs = 0;
        c.media.connect_timeout_secs = 120;
    })
    .await;
    // OBS holds one token for the whole stream; here the stream outlives it.
    let obs = token("studio", "dealer", "demo", now_secs() + 2);
    let r = send(
        &n,
        Method::POST,
        "/whip/demo",
        Some(&obs),
        Some((SDP, offer("sendonly"))),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let session = r.headers()[LOCATION].to_str().unwrap().to_owned();
    let later = open(&n, &fresh("studio", "player", "demo")).await;

    // Wait until the node itself calls the token expired.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = send(&n, Method::GET, "/api/v1/tables/demo", Some(&obs), None).await;
        if r.status() == StatusCode::UNAUTHORIZED {
            assert!(r.text().await.unwrap().contains("expired"));
            break;
        }
        assert!(Instant::now() < deadline, "the token never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It opens nothing new, and touches no other session of the same user ...
    let r = send(
        &n,
        Method::POST,
        "/whip/demo",
        Some(&obs),
        Some((SDP, offer("sendonly"))),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(delete(&n, &later, &obs).await, StatusCode::NOT_FOUND);
    // ... but the session it opened still answers to it.
    assert_eq!(
        patch(&n, &session, &obs).await,
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(delete(&n, &session, &obs).await, StatusCode::OK);
    n.stop().await;
}
