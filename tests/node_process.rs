//! A node as its own process under signals, as the cluster tests use it: SIGTERM stops it
//! cleanly; SIGSTOP freezes it until SIGCONT; after SIGKILL it starts again on the same port
//! with its table log.

mod common;

use common::NodeRef;
use common::control::{dealer, snapshot};
use common::process::{NodeOptions, NodeProcess};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

const DEALER_OPENS_ROUNDS: &str = r#"
[[tables]]
id = "demo"
betting_window_secs = 60
"#;

/// Whether `GET /readyz` answers 200 within half a second.
async fn answers_ready(node: &NodeProcess) -> bool {
    let r = node
        .client()
        .get(node.url("/readyz"))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    matches!(r, Ok(r) if r.status() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_node_with_status_zero() {
    let node = NodeProcess::start(NodeOptions::new("a", DEALER_OPENS_ROUNDS)).await;
    node.terminate();
    let status = node.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}\n{}", node.tail_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_answers_after_sigcont_and_a_killed_one_restarts_with_its_log() {
    let node = NodeProcess::start(NodeOptions::new("a", DEALER_OPENS_ROUNDS)).await;
    let (status, body) = dealer(&node, "open", None).await;
    assert_eq!(status, 200, "{body}");
    let before = snapshot(&node).await["last_seq"]
        .as_u64()
        .expect("last_seq");
    assert!(before >= 1, "the open is logged: last_seq {before}");

    node.stop();
    assert!(
        !answers_ready(&node).await,
        "a stopped node answers nothing"
    );
    node.cont();
    node.wait_ready().await;

    node.kill();
    let status = node.exited().expect("a killed node has exited");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(!answers_ready(&node).await, "a killed node answers nothing");
    node.restart();
    node.wait_ready().await;
    let after = snapshot(&node).await["last_seq"]
        .as_u64()
        .expect("last_seq");
    assert!(
        after >= before,
        "the table log survives on the same data dir: {before} then {after}"
    );
}
