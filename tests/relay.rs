//! One dealer, many players: packets delivered, sequence continuity across a dealer restart,
//! players who join before the dealer, and the control channel on the same connection.

mod common;

use common::{TestNode, target, wait_until};
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
    wait_until(
        Duration::from_secs(10),
        "every player gets video and audio; the fewest packets of a kind",
        async || {
            let got = |p: &Subscriber| {
                let s = p.stats();
                s.video_packets.min(s.audio_packets)
            };
            players.iter().map(got).min()
        },
        |least| least.is_some_and(|n| n > 0),
    )
    .await;

    let t0 = Instant::now();
    let sent0 = dealer.stats();
    // A measurement window, not a wait: what the dealer sends in 5 s against what arrives.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sent1 = dealer.stats();
    // Count what arrives before t1, 100 ms after the dealer's count, awaiting what is in flight.
    let t1 = Instant::now() + Duration::from_millis(100);
    let video_sent = (sent1.video_sent - sent0.video_sent) as f64;
    let audio_sent = (sent1.audio_sent - sent0.audio_sent) as f64;
    assert!(
        video_sent > 500.0,
        "the dealer sent {video_sent} video packets in 5 s"
    );
    wait_until(
        Duration::from_secs(5),
        &format!(
            "every player gets 95% of the {video_sent} video and {audio_sent} audio packets; \
             (video, audio) per player"
        ),
        async || {
            let got = |p: &Subscriber| {
                let s = p.stats();
                (
                    received_between(&s.video, t0, t1) as f64,
                    received_between(&s.audio, t0, t1) as f64,
                )
            };
            players.iter().map(got).collect::<Vec<_>>()
        },
        |got| {
            got.iter()
                .all(|&(video, audio)| video >= 0.95 * video_sent && audio >= 0.95 * audio_sent)
        },
    )
    .await;

    // The dealer's encoder restarts: a new WHIP session with new SSRCs and sequence numbers.
    let before: Vec<usize> = players.iter().map(|p| p.stats().video.len()).collect();
    let switch_at = Instant::now();
    let dealer2 = common::dealer(&node, epoch).await;
    dealer.vanish().await;
    wait_until(
        Duration::from_secs(10),
        "every player gets 200 video packets from the new session; the fewest new",
        async || {
            let new = |(i, p): (usize, &Subscriber)| p.stats().video.len() - before[i];
            players.iter().enumerate().map(new).min()
        },
        |fewest| fewest.is_some_and(|n| n > 200),
    )
    .await;
    for (i, p) in players.iter().enumerate() {
        let s = p.stats();
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
    // Not a wait: half a second at an empty table, during which nothing may arrive.
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
    wait_until(
        Duration::from_secs(10),
        "video and audio start without renegotiation: (video, audio) packets",
        async || {
            let s = player.stats();
            (s.video_packets, s.audio_packets)
        },
        |&(video, audio)| video > 100 && audio > 50,
    )
    .await;
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
    let wait = async |what: &str, needle: &str| {
        let got = wait_until(
            Duration::from_secs(5),
            &format!("a {what} on the control channel; messages"),
            async || player.stats().control_messages,
            |got| got.iter().any(|m| m.contains(needle)),
        )
        .await;
        got.into_iter().find(|m| m.contains(needle)).unwrap()
    };
    wait_until(
        Duration::from_secs(5),
        "the control channel opens",
        async || player.stats().control_open,
        |&open| open,
    )
    .await;
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
