//! A publisher nobody on this project wrote: aiortc (Python, libvpx through PyAV) publishes a
//! test pattern over WHIP, and a player receives its video through the node.
//!
//! `tests/run.sh` installs aiortc into `tests/third_party/.pylib`; this test runs
//! `tests/third_party/aiortc_whip.py` with that on PYTHONPATH.

mod common;

use common::TestNode;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tablecast::auth::TokenRole;
use tablecast::client::{SubscribeOptions, Subscriber, Target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_publishes_over_whip_and_a_player_receives_its_video() {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/third_party");
    let pylib = here.join(".pylib");
    assert!(
        pylib.join("aiortc").exists(),
        "aiortc is not installed in {}: run `bash tests/run.sh`, which installs it",
        pylib.display()
    );
    let node = TestNode::start().await;
    let player_target = Target {
        base_url: node.node.base_url(),
        table: "demo".into(),
        camera: None,
        token: node.token(TokenRole::Player, "demo"),
    };
    let player = Subscriber::connect(
        player_target,
        SubscribeOptions {
            data_channel: false,
            ..Default::default()
        },
        Instant::now(),
    )
    .await
    .expect("player joins before the dealer");

    let url = node.url("/whip/demo");
    let token = node.token(TokenRole::Dealer, "demo");
    let out = tokio::process::Command::new("python3")
        .arg(here.join("aiortc_whip.py"))
        .args([url.as_str(), token.as_str(), "4"])
        .env("PYTHONPATH", &pylib)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("aiortc finishes")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "aiortc publisher failed: {stdout}\n{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap_or("")).expect("aiortc report");
    assert_eq!(report["status"], 201);
    assert_eq!(report["delete_status"], 200);
    let s = player.stats();
    assert!(
        s.video_packets > 60,
        "the player received {} video packets from aiortc",
        s.video_packets
    );
    assert!(
        s.video.windows(2).all(|w| w[1].ssrc == w[0].ssrc),
        "one SSRC toward the player"
    );
    player.close().await.expect("delete");
    node.stop().await;
}
