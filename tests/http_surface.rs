//! The rest of the HTTP surface: health, readiness, metrics, demo tokens, pages, HTTPS with a
//! generated certificate, the extra plain listener, and a clean stop.

mod common;

use common::{TestNode, temp_dir, test_config};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use tablecast::auth::{TokenRole, Tokens};

fn content_type(r: &reqwest::Response) -> String {
    r.headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_with_the_right_types() {
    let n = TestNode::start().await;

    let r = n.client.get(n.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(content_type(&r).starts_with("text/plain"));
    assert_eq!(r.text().await.unwrap().trim(), "ok");

    let r = n.client.get(n.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(content_type(&r).starts_with("application/json"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");

    let r = n.client.get(n.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        content_type(&r).starts_with("text/plain; version=0.0.4"),
        "{}",
        content_type(&r)
    );
    let text = r.text().await.unwrap();
    assert!(
        text.contains("# TYPE tablecast_sessions_reaped_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE tablecast_subscribers gauge"),
        "{text}"
    );
    n.stop().await;
}

#[tokio::test]
async fn demo_tokens_are_issued_only_in_demo_mode() {
    let n = TestNode::start().await;
    let r = n
        .client
        .post(n.url("/api/v1/demo/token"))
        .json(&serde_json::json!({ "role": "dealer", "table": "demo", "user": "alice" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    let id = Tokens::from_secret(common::TEST_SECRET.as_bytes())
        .verify(token)
        .unwrap();
    assert_eq!(id.role, TokenRole::Dealer);
    assert_eq!(id.user.as_str(), "alice");

    let r = n
        .client
        .post(n.url("/api/v1/demo/token"))
        .json(&serde_json::json!({ "role": "player", "table": "demo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let cases = [
        (
            serde_json::json!({ "role": "operator", "table": "demo" }),
            StatusCode::FORBIDDEN,
        ),
        (
            serde_json::json!({ "role": "player", "table": "nope" }),
            StatusCode::NOT_FOUND,
        ),
        (
            serde_json::json!({ "role": "king", "table": "demo" }),
            StatusCode::BAD_REQUEST,
        ),
        (
            serde_json::json!({ "table": "demo" }),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (body, status) in cases {
        let r = n
            .client
            .post(n.url("/api/v1/demo/token"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
        assert!(content_type(&r).starts_with("text/plain"), "{body}");
    }
    n.stop().await;

    let n = TestNode::start_with(|c| c.auth.demo = false).await;
    let r = n
        .client
        .post(n.url("/api/v1/demo/token"))
        .json(&serde_json::json!({ "role": "player", "table": "demo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    n.stop().await;
}

/// A file of the web root the test nodes serve.
fn web_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("web")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.is_empty(), "{} is empty", path.display());
    text
}

#[tokio::test]
async fn pages_and_web_files_are_served() {
    let n = TestNode::start().await;
    for (path, file) in [
        ("/", "index.html"),
        ("/play/demo", "play.html"),
        ("/dealer/demo", "dealer.html"),
        ("/ops", "ops.html"),
        ("/web/tablecast.js", "tablecast.js"),
    ] {
        let r = n.client.get(n.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(
            r.text().await.unwrap(),
            web_file(file),
            "{path} serves {file}"
        );
    }
    let r = n
        .client
        .get(n.url("/web/../Cargo.toml"))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), StatusCode::OK);
    n.stop().await;
}

#[tokio::test]
async fn https_with_a_generated_certificate_and_an_extra_plain_listener() {
    let dir = temp_dir("tls");
    let mut config = test_config(&dir);
    config.http.tls = true;
    config.http.plain_listen = Some("127.0.0.1:0".parse().unwrap());
    let node = tablecast::app::start(config).await.unwrap();
    assert!(node.base_url().starts_with("https://127.0.0.1:"));
    assert!(dir.join("certs/tablecast.crt").exists() && dir.join("certs/tablecast.key").exists());

    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/healthz", node.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let plain = node.plain_addr().unwrap();
    let r = client
        .get(format!("http://{plain}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let cert_before = std::fs::read(dir.join("certs/tablecast.crt")).unwrap();
    node.stop().await;
    let node = tablecast::app::start({
        let mut c = test_config(&dir);
        c.http.tls = true;
        c
    })
    .await
    .unwrap();
    assert_eq!(
        cert_before,
        std::fs::read(dir.join("certs/tablecast.crt")).unwrap(),
        "reused on restart"
    );
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn stop_closes_the_listener() {
    let n = TestNode::start().await;
    let url = n.url("/healthz");
    let client = n.client.clone();
    n.stop().await;
    assert!(client.get(url).send().await.is_err());
}

#[tokio::test]
async fn a_busy_port_is_a_clear_error() {
    let n = TestNode::start().await;
    let dir = temp_dir("busy");
    let mut config = test_config(&dir);
    config.http.listen = n.node.http_addr();
    let err = tablecast::app::start(config)
        .await
        .err()
        .expect("second bind fails")
        .to_string();
    assert!(
        err.contains("listen") && err.contains(&n.node.http_addr().to_string()),
        "{err}"
    );
    n.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
