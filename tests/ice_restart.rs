//! ICE restart (RFC 9725 §4.4): a player whose network changes restarts ICE from a new socket
//! with `PATCH` + `If-Match: "*"` and keeps its stream — same SSRC, continuous sequence numbers —
//! and the session's ETag moves on, so a PATCH with the old one is `412`.

mod common;

use common::{TestNode, wait_until};
use reqwest::StatusCode;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tablecast::auth::TokenRole;
use tablecast::client::Received;

const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// How many of `packets` arrived after `since`.
fn fresh(packets: &[Received], since: Instant) -> usize {
    packets.iter().filter(|r| r.at > since).count()
}

/// Of the packets that arrived before `cutoff`, the share of the sequence range they span that
/// arrived at least once (retransmissions included).
fn coverage(packets: &[Received], cutoff: Instant) -> (f64, usize) {
    let seqs: Vec<u16> = packets
        .iter()
        .filter(|r| r.at < cutoff)
        .map(|r| r.seq)
        .collect();
    let (Some(first), Some(last)) = (seqs.first(), seqs.last()) else {
        return (0.0, 0);
    };
    let span = last.wrapping_sub(*first) as usize + 1;
    let unique: BTreeSet<u16> = seqs.iter().map(|s| s.wrapping_sub(*first)).collect();
    (unique.len() as f64 / span as f64, span)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_that_changes_network_keeps_its_stream_after_an_ice_restart() {
    let node = TestNode::start().await;
    let epoch = Instant::now();
    let dealer = common::dealer(&node, epoch).await;
    let options = common::media_only();
    let mut player = common::player(&node, options, epoch).await;
    // The range judged below: about a second of video before the restart, three after it.
    wait_until(
        Duration::from_secs(10),
        "130 video packets arrive before the restart: video packets",
        async || player.stats().video_packets,
        |&n| n >= 130,
    )
    .await;
    let old_etag = player.resource.etag.clone().expect("an ETag from POST");

    let restart_at = Instant::now();
    player.restart_ice().await.expect("ICE restart answered");
    let new_etag = player
        .resource
        .etag
        .clone()
        .expect("an ETag from the restart");
    assert_ne!(new_etag, old_etag, "a restart makes a new ETag");

    wait_until(
        Duration::from_secs(10),
        "400 video packets reach the new socket: video packets since the restart",
        async || fresh(&player.stats().video, restart_at),
        |&n| n >= 400,
    )
    .await;
    let after = player.stats();
    let ssrcs: BTreeSet<u32> = after.video.iter().map(|r| r.ssrc).collect();
    assert_eq!(ssrcs.len(), 1, "one video SSRC across the restart");
    let audio_ssrcs: BTreeSet<u32> = after.audio.iter().map(|r| r.ssrc).collect();
    assert_eq!(audio_ssrcs.len(), 1, "one audio SSRC across the restart");
    // What the restart gap dropped is recovered by NACK: the sequence range stays whole.
    let (covered, span) = coverage(&after.video, Instant::now() - Duration::from_millis(500));
    assert!(
        covered >= 0.99,
        "{covered:.4} of {span} sequence numbers arrived across the restart"
    );
    assert!(
        span < after.video.len() + 50,
        "no sequence jump: a span of {span} for {} packets",
        after.video.len()
    );

    // The old ETag is dead; the new one takes trickle.
    let token = node.token(TokenRole::Player, "demo");
    let trickle = |etag: String| {
        node.client
            .patch(&player.resource.location)
            .bearer_auth(&token)
            .header("Content-Type", SDPFRAG)
            .header("If-Match", etag)
            .body("a=end-of-candidates\r\n")
            .send()
    };
    assert_eq!(
        trickle(old_etag).await.unwrap().status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        trickle(new_etag).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );

    assert_eq!(player.close().await.expect("delete"), 200);
    dealer.close().await.expect("delete");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_keep_one_stream_when_the_dealer_restarts_ice_from_a_new_network() {
    let node = TestNode::start().await;
    let epoch = Instant::now();
    let mut dealer = common::dealer(&node, epoch).await;
    let options = common::media_only();
    let player = common::player(&node, options, epoch).await;
    // The range judged below: about a second of video before the restart, three after it.
    wait_until(
        Duration::from_secs(10),
        "130 video packets arrive before the restart: video packets",
        async || player.stats().video_packets,
        |&n| n >= 130,
    )
    .await;
    let old_etag = dealer.resource.etag.clone();
    let plis_before = dealer.stats().plis_received;

    let restart_at = Instant::now();
    dealer.restart_ice().await.expect("ICE restart answered");
    assert_ne!(dealer.resource.etag, old_etag, "a restart makes a new ETag");
    wait_until(
        Duration::from_secs(10),
        "400 video packets arrive after the dealer moved: video packets since the restart",
        async || fresh(&player.stats().video, restart_at),
        |&n| n >= 400,
    )
    .await;

    let s = player.stats();
    let ssrcs: BTreeSet<u32> = s.video.iter().map(|r| r.ssrc).collect();
    assert_eq!(ssrcs.len(), 1, "one video SSRC across the dealer's restart");
    let (covered, span) = coverage(&s.video, Instant::now() - Duration::from_millis(500));
    assert!(
        covered >= 0.99,
        "{covered:.4} of {span} sequence numbers arrived across the dealer's restart"
    );
    // The same source continues: no re-anchoring on a keyframe, so no wait for one.
    let gap = s
        .video
        .windows(2)
        .filter(|w| w[1].at > restart_at)
        .map(|w| w[1].at.duration_since(w[0].at))
        .max()
        .unwrap_or_default();
    assert!(gap < Duration::from_millis(500), "video paused {gap:?}");
    assert_eq!(
        dealer.stats().plis_received,
        plis_before,
        "the source did not change, so no keyframe was asked for"
    );
    assert_eq!(
        node.node
            .metrics()
            .table(&tablecast::ids::TableId::parse("demo").unwrap())
            .publishers
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "still one publisher session"
    );

    assert_eq!(dealer.close().await.expect("delete"), 200);
    player.close().await.expect("delete");
    node.stop().await;
}
