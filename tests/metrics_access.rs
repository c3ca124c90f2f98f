//! `/metrics` is private by default: on the main listener it answers only an operator token for
//! every table; the `[metrics] listen` listener serves it without a token, and nothing else.

mod common;

use common::TestNode;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use std::time::Duration;
use tablecast::auth::TokenRole;

async fn get(n: &TestNode, url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = n.client.get(url);
    if let Some(token) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    req.send().await.unwrap()
}

fn is_exposition(r: &reqwest::Response) -> bool {
    r.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain; version=0.0.4"))
}

#[tokio::test]
async fn the_main_listener_serves_metrics_to_operators_only() {
    let n = TestNode::start().await;
    let url = n.url("/metrics");

    let r = get(&n, &url, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key(WWW_AUTHENTICATE));
    assert!(
        !r.text().await.unwrap().contains("tablecast_"),
        "no metrics leak"
    );

    let r = get(&n, &url, Some("not-a-token")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    for role in [TokenRole::Player, TokenRole::Dealer] {
        let r = get(&n, &url, Some(&n.token(role, "demo"))).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{role}");
        let text = r.text().await.unwrap();
        assert!(text.contains("operator"), "{role}: {text}");
        assert!(!text.contains("tablecast_"), "no metrics leak");
    }

    // Metrics cover every table: an operator of one table is not enough.
    let r = get(&n, &url, Some(&n.token(TokenRole::Operator, "demo"))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("table *"));

    let r = get(&n, &url, Some(&n.token(TokenRole::Operator, "*"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(is_exposition(&r));
    let text = r.text().await.unwrap();
    assert!(
        text.contains("tablecast_subscribers{table=\"demo\"}"),
        "{text}"
    );
    n.stop().await;
}

#[tokio::test]
async fn the_metrics_listener_serves_metrics_without_a_token_and_nothing_else() {
    let n = TestNode::start().await;
    let addr = n.node.metrics_addr().expect("a metrics listener");
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    assert_ne!(addr, n.node.http_addr());

    let r = get(&n, &n.metrics_url(), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(is_exposition(&r));
    let text = r.text().await.unwrap();
    assert!(
        text.contains("# TYPE tablecast_subscribers gauge"),
        "{text}"
    );

    for path in ["/healthz", "/api/v1/tables/demo", "/", "/ops"] {
        let r = get(&n, &format!("http://{addr}{path}"), None).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let r = n
        .client
        .post(format!("http://{addr}/api/v1/demo/token"))
        .json(&serde_json::json!({ "role": "player", "table": "demo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    n.stop().await;
}

#[tokio::test]
async fn an_empty_listen_means_no_metrics_listener() {
    let n = TestNode::start_with(|c| c.metrics.listen = None).await;
    assert_eq!(n.node.metrics_addr(), None);
    // The main listener still serves operators.
    let r = get(
        &n,
        &n.url("/metrics"),
        Some(&n.token(TokenRole::Operator, "*")),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    n.stop().await;
}

#[tokio::test]
async fn the_metrics_listener_closes_with_the_node() {
    let n = TestNode::start().await;
    let url = n.metrics_url();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert_eq!(
        client.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    n.stop().await;
    assert!(client.get(&url).send().await.is_err());
}

#[tokio::test]
async fn a_busy_metrics_port_is_a_clear_error() {
    let n = TestNode::start().await;
    let busy = n.node.metrics_addr().unwrap();
    let dir = common::temp_dir("busy-metrics");
    let mut config = common::test_config(&dir);
    config.metrics.listen = Some(busy);
    let err = tablecast::app::start(config)
        .await
        .err()
        .expect("second bind fails")
        .to_string();
    assert!(
        err.contains("[metrics] listen") && err.contains(&busy.to_string()),
        "{err}"
    );
    n.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
