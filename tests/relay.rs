//! One dealer, many players: packets delivered, sequence continuity across a dealer restart,
//! players who join before the dealer, and the control channel on the same connection.

mod common;

use common::{TestNode, target};
use std::time::{Duration, Instant};
use tablecast::auth::TokenRole;
use tablecast::client::{PublishOptions, Publisher, Received, SubscribeOptions, Subscriber};
use tablecast::media::keyframe::VideoCodec;

/// Largest forward step between consecutive received sequence numbers, in arrival order.
fn largest_jump(packets: &[Received]) -> i32 {
    packets
        .windows(2)
        .map(|w| w[1].seq.wrapping_sub(w[0].seq) as i16 as i32)
        .max()
        .unwrap_or(0)
}

fn received_between(packets: &[Received], from: Instant, to: Instant) -> usize {
    packets.iter().filter(|p| p.at >= from && p.at < to).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_players_get_the_dealer_and_continue_seamlessly_when_the_dealer_reconnects() {
    let node = TestNode::start_with(|c| c.media.workers = 2).await;
    let epoch = Instant::now();
    let dealer = common::dealer(&node, epoch).await;
    let mut players = Vec::new();
    for _ in 0..20 {
        let options = common::media_only();
        players.push(
            Subscriber::connect(target(&node, TokenRole::Player), options, epoch)
                .await
                .expect("player joins"),
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let t0 = Instant::now();
    let sent0 = dealer.stats();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sent1 = dealer.stats();
    // Packets in flight at t1 are still arriving; give them a moment, then count to t1 + 100 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t1 = t0 + Duration::from_millis(5100);
    let video_sent = (sent1.video_sent - sent0.video_sent) as f64;
    let audio_sent = (sent1.audio_sent - sent0.audio_sent) as f64;
    assert!(
        video_sent > 500.0,
        "the dealer sent {video_sent} video packets in 5 s"
    );
    for (i, p) in players.iter().enumerate() {
        let s = p.stats();
        let video = received_between(&s.video, t0, t1) as f64;
        let audio = received_between(&s.audio, t0, t1) as f64;
        assert!(
            video >= 0.95 * video_sent,
            "player {i} got {video} of {video_sent} video packets"
        );
        assert!(
            audio >= 0.95 * audio_sent,
            "player {i} got {audio} of {audio_sent} audio packets"
        );
    }

    // The dealer's encoder restarts: a new WHIP session with new SSRCs and sequence numbers.
    let before: Vec<usize> = players.iter().map(|p| p.stats().video.len()).collect();
    let switch_at = Instant::now();
    let dealer2 = common::dealer(&node, epoch).await;
    dealer.vanish().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, p) in players.iter().enumerate() {
        let s = p.stats();
        assert!(
            s.video.len() > before[i] + 200,
            "player {i} gets video from the new session"
        );
        let ssrcs: std::collections::BTreeSet<u32> = s.video.iter().map(|r| r.ssrc).collect();
        assert_eq!(ssrcs.len(), 1, "player {i} sees one video SSRC throughout");
        let jump = largest_jump(&s.video);
        assert!(jump <= 3, "player {i}: sequence numbers jumped by {jump}");
        assert!(
            largest_jump(&s.audio) <= 3,
            "player {i}: audio sequence jumped"
        );
        // Across the switch (the longest silence after it began) the timestamp advances by about
        // the length of the silence: never backwards, never by a random jump.
        let after: Vec<&Received> = s
            .video
            .iter()
            .filter(|r| r.at + Duration::from_millis(200) > switch_at)
            .collect();
        let (a, b) = after
            .windows(2)
            .map(|w| (w[0], w[1]))
            .max_by_key(|(a, b)| b.at.duration_since(a.at))
            .expect("video around the switch");
        let ts_step = b.timestamp.wrapping_sub(a.timestamp) as i32 as f64;
        let silence = b.at.duration_since(a.at).as_secs_f64() * 90_000.0;
        assert!(
            ts_step > 0.0 && ts_step < silence + 45_000.0,
            "player {i}: timestamp stepped by {ts_step} over a {silence} tick silence"
        );
    }
    assert_eq!(dealer2.close().await.expect("delete"), 200);
    for p in players {
        assert_eq!(p.close().await.expect("delete"), 200);
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_who_joins_before_the_dealer_gets_video_when_the_dealer_goes_live() {
    let node = TestNode::start().await;
    let epoch = Instant::now();
    let player = Subscriber::connect(
        target(&node, TokenRole::Player),
        SubscribeOptions::default(),
        epoch,
    )
    .await
    .expect("a player can join an empty table");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(player.stats().video_packets, 0);
    let dealer = Publisher::connect(
        target(&node, TokenRole::Dealer),
        PublishOptions {
            video: Some(VideoCodec::Vp8),
            ..Default::default()
        },
        epoch,
    )
    .await
    .expect("dealer publishes");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = player.stats();
    assert!(
        s.video_packets > 100,
        "video started without renegotiation: {} packets",
        s.video_packets
    );
    assert!(
        s.audio_packets > 50,
        "audio started: {} packets",
        s.audio_packets
    );
    dealer.close().await.expect("delete");
    player.close().await.expect("delete");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_channel_on_the_player_connection_speaks_the_table_protocol() {
    let node = TestNode::start().await;
    let player = Subscriber::connect(
        target(&node, TokenRole::Player),
        SubscribeOptions::default(),
        Instant::now(),
    )
    .await
    .expect("player joins");
    let deadline = Instant::now() + Duration::from_secs(5);
    let wait = |what: &'static str, needle: &'static str| {
        let player = &player;
        async move {
            loop {
                let got = player.stats().control_messages;
                if let Some(m) = got.iter().find(|m| m.contains(needle)) {
                    return m.clone();
                }
                assert!(
                    Instant::now() < deadline,
                    "no {what} on the control channel: {got:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    while !player.stats().control_open {
        assert!(
            Instant::now() < deadline,
            "the control channel never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The WHEP session's token already says who this is: hello needs no second token.
    player.send_control(r#"{"type":"hello","token":""}"#);
    let welcome = wait("welcome", "\"welcome\"").await;
    assert!(welcome.contains("\"snapshot\""), "{welcome}");
    player.send_control(r#"{"type":"ping","client_ms":1}"#);
    let pong = wait("pong", "\"pong\"").await;
    assert!(pong.contains("\"client_ms\":1"), "{pong}");
    player.close().await.expect("delete");
    node.stop().await;
}
