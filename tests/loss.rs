//! Loss and keyframes: a lossy player recovers through NACKs answered from the node's packet
//! buffer, and a player flooding keyframe requests cannot flood the dealer.

mod common;

use common::{TestNode, wait_until};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tablecast::client::SubscribeOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_losing_five_percent_recovers_through_nacks() {
    let node = TestNode::start().await;
    let epoch = Instant::now();
    let dealer = common::dealer(&node, epoch).await;
    let options = SubscribeOptions {
        drop_ratio: 0.05,
        data_channel: false,
        ..Default::default()
    };
    let player = common::player(&node, options, epoch).await;
    let metrics = node
        .node
        .metrics()
        .table(&tablecast::ids::TableId::parse("demo").unwrap());
    // Enough to judge: about 5 s of video, with packets dropped and retransmitted.
    wait_until(
        Duration::from_secs(20),
        "the player gets 700 video packets, 20 are dropped and the node retransmits 20: \
         (received, dropped, retransmitted)",
        async || {
            let s = player.stats();
            (
                s.video.len(),
                s.dropped_on_purpose,
                metrics.retransmissions.load(Relaxed),
            )
        },
        |&(received, dropped, retransmitted)| received >= 700 && dropped > 20 && retransmitted > 20,
    )
    .await;
    let s = player.stats();
    // Judge the range whose retransmissions had time to arrive: all but the last 500 ms.
    let cutoff = Instant::now() - Duration::from_millis(500);
    let judged: Vec<u16> = s
        .video
        .iter()
        .filter(|r| r.at < cutoff)
        .map(|r| r.seq)
        .collect();
    let first = *judged.first().expect("video arrived");
    let last = *judged.last().expect("video arrived");
    let span = last.wrapping_sub(first) as usize + 1;
    let unique: std::collections::BTreeSet<u16> =
        judged.iter().map(|s| s.wrapping_sub(first)).collect();
    let recovered = unique.len() as f64 / span as f64;
    assert!(
        recovered >= 0.995,
        "recovered {:.4} of {span} packets ({} dropped on purpose)",
        recovered,
        s.dropped_on_purpose
    );
    dealer.close().await.expect("delete");
    player.close().await.expect("delete");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_flooding_keyframe_requests_gets_at_most_two_a_second_to_the_dealer() {
    let node = TestNode::start().await;
    let epoch = Instant::now();
    let dealer = common::dealer(&node, epoch).await;
    let options = SubscribeOptions {
        pli_every: Some(Duration::from_millis(10)),
        data_channel: false,
        ..Default::default()
    };
    let player = common::player(&node, options, epoch).await;
    wait_until(
        Duration::from_secs(10),
        "the player's keyframe requests reach the dealer: keyframe requests received",
        async || dealer.stats().plis_received,
        |&n| n > 0,
    )
    .await;
    let before = dealer.stats().plis_received;
    let sent_before = player.stats().plis_sent;
    // A measurement window, not a wait: the rate that gets through is what is tested.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let through = dealer.stats().plis_received - before;
    let asked = player.stats().plis_sent - sent_before;
    assert!(asked > 200, "the player asked {asked} times");
    assert!(
        through <= 9,
        "{through} keyframe requests reached the dealer in 4 s (limit 2/s)"
    );
    assert!(
        through >= 4,
        "keyframe requests must still get through: {through}"
    );
    dealer.close().await.expect("delete");
    player.close().await.expect("delete");
    node.stop().await;
}
