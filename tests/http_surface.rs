//! The rest of the HTTP surface: health, readiness, metrics, pages (and no path out of the web
//! root), HTTPS with a generated certificate, the extra plain listener, and a clean stop. Demo
//! tokens are in `demo_mode.rs`, who may read `/metrics` in `metrics_access.rs`.

mod common;

use common::{TestNode, temp_dir, test_config};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

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

    let r = n.client.get(n.metrics_url()).send().await.unwrap();
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
    n.stop().await;
}

/// One raw HTTP/1.1 GET whose request target goes on the wire exactly as given (an HTTP client
/// resolves `..` segments before sending); returns the status and the whole answer.
async fn raw_get(addr: std::net::SocketAddr, target: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut response),
    )
    .await
    .unwrap_or_else(|_| panic!("no complete answer to GET {target} within 10 s"))
    .unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("GET {target}: not an HTTP/1.1 answer: {response:?}"));
    (status, response)
}

#[tokio::test]
async fn path_traversal_never_reaches_files_outside_the_web_root() {
    let n = TestNode::start().await;
    // `[package]` is in the crate's Cargo.toml, one level above the web root, and in no web file.
    let secret = "[package]";
    let manifest_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        std::fs::read_to_string(manifest_dir.join("Cargo.toml"))
            .unwrap()
            .contains(secret)
    );
    let crate_dir = manifest_dir.file_name().unwrap().to_str().unwrap();
    // `/play/{table}` and `/dealer/{table}` answer their page whatever the one segment after
    // them says (the page reads the table id from the URL and reports a bad one itself), so
    // `/play/..%2fCargo.toml` is the play page: no file is read from the request path.
    let page_for = |target: &str| {
        [("/play/", "play.html"), ("/dealer/", "dealer.html")]
            .into_iter()
            .find_map(|(prefix, page)| {
                let segment = target.strip_prefix(prefix)?;
                (!segment.contains('/')).then_some(page)
            })
    };

    // Each way to spell a parent directory, and each way to spell a separator.
    let ups = ["..", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%252e%252e"];
    let seps = ["/", "%2f", "%2F", "%5c", "%5C", "%252f"];
    // Every static route, and a path under each.
    let prefixes = [
        "/web/",
        "/web/tc/",
        "/play/",
        "/play/demo/",
        "/dealer/",
        "/dealer/demo/",
        "/ops/",
        "/",
    ];
    for prefix in prefixes {
        for up in ups {
            for sep in seps {
                // Out of the web root to Cargo.toml, and out of the crate and back in by name.
                for target in [
                    format!("{prefix}{up}{sep}Cargo.toml"),
                    format!("{prefix}{up}{sep}{up}{sep}Cargo.toml"),
                    format!("{prefix}{up}{sep}{up}{sep}{crate_dir}{sep}Cargo.toml"),
                    format!("{prefix}{up}{sep}{up}{sep}{up}{sep}{crate_dir}{sep}Cargo.toml"),
                ] {
                    let (status, response) = raw_get(n.node.http_addr(), &target).await;
                    assert!(
                        !response.contains(secret),
                        "GET {target} leaked Cargo.toml:\n{response}"
                    );
                    match page_for(&target) {
                        Some(page) => {
                            let body = response.split_once("\r\n\r\n").map(|(_, b)| b);
                            assert!(
                                status == 200 && body == Some(&*web_file(page)),
                                "GET {target} is not just {page}:\n{response}"
                            );
                        }
                        None => assert!(
                            status == 400 || status == 404,
                            "GET {target} answered {status}, not 400 or 404:\n{response}"
                        ),
                    }
                }
            }
        }
    }
    // The raw request does reach files: one for a file in the web root gets it.
    let (status, response) = raw_get(n.node.http_addr(), "/web/tablecast.js").await;
    assert_eq!(status, 200, "{response}");
    assert!(response.ends_with(&web_file("tablecast.js")), "{response}");
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
