//! What a player needs from the node to judge its link and to keep its picture and sound in step:
//! every video packet carries a transport-wide sequence number (when the player offered
//! transport-cc, as browsers do), the player gets RTCP sender reports for its video and audio,
//! and the operator's listing shows an estimate fed by the player's own reports.

mod common;

use common::{TestNode, dealer, player};
use serde_json::Value;
use std::time::{Duration, Instant};
use tablecast::auth::TokenRole;
use tablecast::client::SubscribeOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_gets_transport_cc_numbers_and_sender_reports_and_is_listed_with_its_estimate() {
    let node = TestNode::start().await;
    let epoch = Instant::now();
    let _dealer = dealer(&node, epoch).await;
    let p = player(
        &node,
        SubscribeOptions {
            data_channel: false,
            rtx: true,
            transport_cc: true,
            ..Default::default()
        },
        epoch,
    )
    .await;

    // Sender reports come every second or so, per stream.
    let stats = common::wait_until(
        Duration::from_secs(20),
        "300 video packets and two sender reports each for video and audio: (video, audio, reports)",
        async || {
            let s = p.stats();
            (s.video_packets, s.audio_packets, s.sender_reports.clone())
        },
        |(video, audio, reports)| {
            *video >= 300 && *audio > 0 && reports.len() >= 2 && reports.values().all(|&n| n >= 2)
        },
    )
    .await;
    println!(
        "video packets {}, audio packets {}, sender reports by SSRC {:?}",
        stats.0, stats.1, stats.2
    );
    let s = p.stats();
    let video_ssrcs: std::collections::BTreeSet<u32> = s.video.iter().map(|r| r.ssrc).collect();
    let audio_ssrcs: std::collections::BTreeSet<u32> = s.audio.iter().map(|r| r.ssrc).collect();
    for ssrc in video_ssrcs.iter().chain(&audio_ssrcs) {
        assert!(
            s.sender_reports.get(ssrc).is_some_and(|&n| n >= 2),
            "no sender reports for stream {ssrc}: {:?}",
            s.sender_reports
        );
    }
    println!(
        "video packets with a transport-cc number: {} of {}",
        s.video_with_extension, s.video_packets
    );
    assert_eq!(
        s.video_with_extension, s.video_packets,
        "every video packet carries its transport-wide sequence number"
    );

    // The player's reports reach the estimator: the listing says so.
    let link = common::wait_until(
        Duration::from_secs(10),
        "the player's link listed with transport-cc feedback and a delivered rate",
        async || {
            let sessions: Vec<Value> = node
                .client
                .get(node.url("/api/v1/tables/demo/sessions"))
                .bearer_auth(node.token(TokenRole::Operator, "demo"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            sessions
                .into_iter()
                .find(|s| s["role"] == "subscriber")
                .map(|s| s["link"].clone())
                .unwrap_or(Value::Null)
        },
        |link| link["feedback"] == "transport-cc" && link["delivered_bps"].as_u64() > Some(10_000),
    )
    .await;
    println!("listed link: {link}");
    // A clean loopback link: nothing lost, nothing limited.
    assert!(link["loss"].as_f64().unwrap() < 0.01, "{link}");
    assert!(link["estimate_bps"].is_null(), "{link}");
    node.stop().await;
}
