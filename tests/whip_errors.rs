//! WHIP and WHEP refuse what they must, with the status RFC 9725 and the issue ask for, a one-line
//! text/plain reason, and CORS headers so browser pages can read it.
//!
//! Tests marked `needs media plane` exercise statuses only a working media plane can produce.

mod common;

use common::{TEST_SECRET, TestNode, offer};
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, AUTHORIZATION,
    CONTENT_TYPE, ETAG, IF_MATCH, LOCATION, WWW_AUTHENTICATE,
};
use tablecast::auth::TokenRole;

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

async fn post(
    n: &TestNode,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: String,
) -> reqwest::Response {
    let mut req = n
        .client
        .post(n.url(path))
        .header(CONTENT_TYPE, content_type)
        .body(body);
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    req.send().await.expect("request")
}

/// Asserts the status, a one-line text/plain body and CORS headers; returns the body.
async fn refused(r: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(r.status(), status, "{:?}", r.headers());
    let ct = r.headers()[CONTENT_TYPE].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let body = r.text().await.unwrap();
    assert_eq!(body.trim_end().lines().count(), 1, "one line: {body:?}");
    assert!(body.len() > 10, "says what to do: {body:?}");
    body
}

fn expired_token(role: &str, table: &str) -> String {
    let claims =
        serde_json::json!({ "sub": "u1", "role": role, "table": table, "iat": 1, "exp": 2 });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn no_token_or_a_bad_one_is_401_with_a_bearer_challenge() {
    let n = TestNode::start().await;
    let foreign = tablecast::auth::Tokens::from_secret(b"another-secret-another-secret-xx")
        .issue(
            TokenRole::Dealer,
            "demo",
            &tablecast::ids::UserId::parse("u").unwrap(),
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    for path in ["/whip/demo", "/whep/demo"] {
        let r = post(&n, path, None, SDP, offer("sendonly")).await;
        assert!(
            r.headers()[WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        refused(r, StatusCode::UNAUTHORIZED).await;

        for bad in [
            "garbage",
            "a.b.c",
            foreign.as_str(),
            &expired_token("dealer", "demo"),
        ] {
            let r = post(&n, path, Some(bad), SDP, offer("sendonly")).await;
            let challenge = r.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_owned();
            assert!(
                challenge.starts_with("Bearer ") && challenge.contains("invalid_token"),
                "{challenge}"
            );
            refused(r, StatusCode::UNAUTHORIZED).await;
        }
    }
    let r = post(
        &n,
        "/whip/demo",
        Some(&expired_token("dealer", "demo")),
        SDP,
        offer("sendonly"),
    )
    .await;
    assert!(
        refused(r, StatusCode::UNAUTHORIZED)
            .await
            .contains("expired")
    );
    n.stop().await;
}

#[tokio::test]
async fn wrong_role_or_table_is_403() {
    let n = TestNode::start_with(|c| {
        c.tables = vec![
            toml::from_str("id = \"demo\"").unwrap(),
            toml::from_str("id = \"vip\"").unwrap(),
        ]
    })
    .await;
    let player = n.token(TokenRole::Player, "demo");
    let body = refused(
        post(&n, "/whip/demo", Some(&player), SDP, offer("sendonly")).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(body.contains("dealer"), "{body}");

    let dealer_vip = n.token(TokenRole::Dealer, "vip");
    let body = refused(
        post(&n, "/whip/demo", Some(&dealer_vip), SDP, offer("sendonly")).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(body.contains("vip"), "{body}");
    let player_vip = n.token(TokenRole::Player, "vip");
    refused(
        post(&n, "/whep/demo", Some(&player_vip), SDP, offer("recvonly")).await,
        StatusCode::FORBIDDEN,
    )
    .await;

    // Allowed: a dealer (or an operator for every table) may watch; an operator may publish.
    let allowed = [
        ("/whep/demo", n.token(TokenRole::Dealer, "demo")),
        ("/whep/vip", n.token(TokenRole::Operator, "*")),
        ("/whip/vip", n.token(TokenRole::Operator, "*")),
    ];
    for (path, token) in allowed {
        let r = post(&n, path, Some(&token), SDP, offer("recvonly")).await;
        assert!(
            ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&r.status()),
            "{path}: {}",
            r.status()
        );
    }
    n.stop().await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let n = TestNode::start().await;
    let dealer = n.token(TokenRole::Dealer, "demo");
    for ct in ["text/plain", "application/json", ""] {
        let body = refused(
            post(&n, "/whip/demo", Some(&dealer), ct, offer("sendonly")).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
        assert!(body.contains("application/sdp"), "{body}");
    }
    let r = n
        .client
        .patch(n.url("/whip/demo/0123456789abcdef"))
        .bearer_auth(&dealer)
        .header(CONTENT_TYPE, SDP)
        .header(IF_MATCH, "*")
        .body("a=ice-ufrag:x\r\n")
        .send()
        .await
        .unwrap();
    assert!(
        refused(r, StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .await
            .contains(SDPFRAG)
    );
    n.stop().await;
}

#[tokio::test]
async fn a_body_over_64_kib_is_413() {
    let n = TestNode::start().await;
    let dealer = n.token(TokenRole::Dealer, "demo");
    let player = n.token(TokenRole::Player, "demo");
    let big = format!(
        "{}{}",
        offer("sendonly"),
        "a=x-padding\r\n".repeat(65 * 1024 / 13 + 1)
    );
    assert!(big.len() > 65 * 1024);
    refused(
        post(&n, "/whip/demo", Some(&dealer), SDP, big.clone()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    refused(
        post(&n, "/whep/demo", Some(&player), SDP, big.clone()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    let r = n
        .client
        .patch(n.url("/whip/demo/0123456789abcdef"))
        .bearer_auth(&dealer)
        .header(CONTENT_TYPE, SDPFRAG)
        .header(IF_MATCH, "*")
        .body(big)
        .send()
        .await
        .unwrap();
    refused(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    n.stop().await;
}

#[tokio::test]
async fn unknown_tables_and_sessions_are_404() {
    let n = TestNode::start().await;
    let op = n.token(TokenRole::Operator, "*");
    let dealer = n.token(TokenRole::Dealer, "demo");
    for path in ["/whip/nope", "/whep/nope", "/whip/bad%20id"] {
        refused(
            post(&n, path, Some(&op), SDP, offer("sendonly")).await,
            StatusCode::NOT_FOUND,
        )
        .await;
    }
    for path in [
        "/whip/demo/0123456789abcdef",
        "/whep/demo/0123456789abcdef",
        "/whip/demo/bad%20id",
    ] {
        let r = n
            .client
            .delete(n.url(path))
            .bearer_auth(&dealer)
            .send()
            .await
            .unwrap();
        refused(r, StatusCode::NOT_FOUND).await;
    }
    // DELETE needs a token too.
    let r = n
        .client
        .delete(n.url("/whip/demo/0123456789abcdef"))
        .send()
        .await
        .unwrap();
    refused(r, StatusCode::UNAUTHORIZED).await;
    n.stop().await;
}

#[tokio::test]
async fn options_answers_cors_with_accept_post_and_accept_patch() {
    let n = TestNode::start().await;
    for kind in ["whip", "whep"] {
        let r = n
            .client
            .request(reqwest::Method::OPTIONS, n.url(&format!("/{kind}/demo")))
            .header("Origin", "https://example.com")
            .header("Access-Control-Request-Method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let h = r.headers();
        assert_eq!(h["accept-post"], SDP);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(
            h["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
        let allowed = h["access-control-allow-headers"].to_str().unwrap();
        for name in ["Authorization", "Content-Type", "If-Match"] {
            assert!(allowed.contains(name), "{allowed}");
        }
        let exposed = h[ACCESS_CONTROL_EXPOSE_HEADERS].to_str().unwrap();
        for name in ["Location", "ETag", "Link", "Accept-Patch"] {
            assert!(exposed.contains(name), "{exposed}");
        }

        let r = n
            .client
            .request(
                reqwest::Method::OPTIONS,
                n.url(&format!("/{kind}/demo/0123456789abcdef")),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(r.headers()["accept-patch"], SDPFRAG);
        assert!(
            r.headers()["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("PATCH")
        );
    }
    n.stop().await;
}

// ---- Statuses that need the media plane --------------------------------------------------

/// POSTs a WHIP offer and returns (Location, ETag).
async fn publish(n: &TestNode) -> (String, String) {
    let dealer = n.token(TokenRole::Dealer, "demo");
    let r = post(n, "/whip/demo", Some(&dealer), SDP, offer("sendonly")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()[LOCATION].to_str().unwrap().to_owned();
    let etag = r.headers()[ETAG].to_str().unwrap().to_owned();
    (location, etag)
}

async fn patch(
    n: &TestNode,
    location: &str,
    if_match: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut req = n
        .client
        .patch(n.url(location))
        .bearer_auth(n.token(TokenRole::Dealer, "demo"))
        .header(CONTENT_TYPE, SDPFRAG)
        .body(body.to_owned());
    if let Some(m) = if_match {
        req = req.header(IF_MATCH, m);
    }
    req.send().await.unwrap()
}

const TRICKLE: &str = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n";
const RESTART: &str = "a=ice-ufrag:efgh\r\na=ice-pwd:zyxwvutsrqponmlkjihgfedc\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n";

#[tokio::test]

async fn whip_and_whep_post_answer_201_with_location_etag_and_sdp() {
    let n = TestNode::start().await;
    for (kind, role, dir) in [
        ("whip", TokenRole::Dealer, "sendonly"),
        ("whep", TokenRole::Player, "recvonly"),
    ] {
        let r = n
            .client
            .post(n.url(&format!("/{kind}/demo?camera=main")))
            .bearer_auth(n.token(role, "demo"))
            .header(CONTENT_TYPE, SDP)
            .header(ACCEPT, SDP)
            .body(offer(dir))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let h = r.headers().clone();
        assert_eq!(h[CONTENT_TYPE], SDP);
        assert!(
            h[LOCATION]
                .to_str()
                .unwrap()
                .starts_with(&format!("/{kind}/demo/"))
        );
        assert!(h[ETAG].to_str().unwrap().starts_with('"'));
        assert_eq!(h["accept-patch"], SDPFRAG);
        assert!(
            h[ACCESS_CONTROL_EXPOSE_HEADERS]
                .to_str()
                .unwrap()
                .contains("Location")
        );
        let answer = r.text().await.unwrap();
        assert!(
            answer.starts_with("v=0") && answer.contains("a=candidate"),
            "{answer}"
        );
        let r = n
            .client
            .delete(n.url(h[LOCATION].to_str().unwrap()))
            .bearer_auth(n.token(role, "demo"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    n.stop().await;
}

#[tokio::test]

async fn patch_needs_if_match_and_a_current_etag() {
    let n = TestNode::start().await;
    let (location, etag) = publish(&n).await;
    refused(
        patch(&n, &location, None, TRICKLE).await,
        StatusCode::PRECONDITION_REQUIRED,
    )
    .await;
    refused(
        patch(&n, &location, Some("\"stale\""), TRICKLE).await,
        StatusCode::PRECONDITION_FAILED,
    )
    .await;
    assert_eq!(
        patch(&n, &location, Some(&etag), TRICKLE).await.status(),
        StatusCode::NO_CONTENT
    );
    refused(
        patch(&n, &location, Some(&etag), "garbage").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    n.stop().await;
}

#[tokio::test]
async fn ice_restart_answers_200_with_a_new_sdpfrag_and_etag() {
    let n = TestNode::start().await;
    let (location, etag) = publish(&n).await;
    let r = patch(&n, &location, Some("*"), RESTART).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], SDPFRAG);
    let new_etag = r.headers()[ETAG].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    assert!(r.text().await.unwrap().contains("a=ice-ufrag:"));
    refused(
        patch(&n, &location, Some(&etag), TRICKLE).await,
        StatusCode::PRECONDITION_FAILED,
    )
    .await;
    n.stop().await;
}

#[tokio::test]

async fn bad_sdp_is_400_and_unusable_sdp_is_422() {
    let n = TestNode::start().await;
    let dealer = n.token(TokenRole::Dealer, "demo");
    refused(
        post(
            &n,
            "/whip/demo",
            Some(&dealer),
            SDP,
            "this is not sdp".into(),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let unusable = offer("sendonly").replace("VP8/90000", "X-NOPE/90000");
    refused(
        post(&n, "/whip/demo", Some(&dealer), SDP, unusable).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    n.stop().await;
}

#[tokio::test]

async fn patch_of_an_unknown_session_is_404() {
    let n = TestNode::start().await;
    refused(
        patch(&n, "/whip/demo/0123456789abcdef", Some("*"), RESTART).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    n.stop().await;
}
