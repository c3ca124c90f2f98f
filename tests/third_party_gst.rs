//! A publisher nobody on this project wrote: GStreamer's webrtcbin (libnice, OpenSSL DTLS,
//! x264 H.264 and Opus) publishes a test pattern over WHIP, and a player receives its video
//! through the node.
//!
//! It stands in for Debian's `simple-whip-client`, which is the same webrtcbin but cannot start
//! on Debian 12 (libsoup2 and libsoup3 in one process). `tests/third_party/gst_whip.py` drives
//! webrtcbin from Debian's `/usr/bin/python3`, whose GStreamer bindings `tests/run.sh` installs
//! with apt.

mod common;

use common::TestNode;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tablecast::auth::TokenRole;
use tablecast::client::{SubscribeOptions, Subscriber, Target};

/// Debian's Python: the gi bindings live in its dist-packages, which a pyenv `python3` on PATH
/// does not see.
const PYTHON: &str = "/usr/bin/python3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_webrtcbin_publishes_over_whip_and_a_player_receives_its_video() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/third_party/gst_whip.py");
    let check = std::process::Command::new(PYTHON)
        .arg(&script)
        .arg("--check")
        .output();
    match check {
        Ok(out) => assert!(
            out.status.success(),
            "GStreamer's webrtcbin is not usable from {PYTHON}: run `bash tests/run.sh`, which \
             installs it with apt\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("cannot run {PYTHON} ({e}): run `bash tests/run.sh` on Debian 12"),
    }

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
    let out = tokio::process::Command::new(PYTHON)
        .arg(&script)
        .args([url.as_str(), token.as_str(), "4"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("gst_whip.py finishes")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "GStreamer publisher failed: {stdout}\n{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
            .expect("gst_whip.py report");
    assert_eq!(report["status"], 201, "{report}");
    assert_eq!(report["connection_state"], "connected", "{report}");
    assert_eq!(report["delete_status"], 200, "{report}");
    let s = player.stats();
    assert!(
        s.video_packets > 60,
        "the player received {} video packets from GStreamer ({report})",
        s.video_packets
    );
    assert!(
        s.video.windows(2).all(|w| w[1].ssrc == w[0].ssrc),
        "one SSRC toward the player"
    );
    player.close().await.expect("delete");
    node.stop().await;
}
