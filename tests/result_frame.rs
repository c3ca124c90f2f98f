//! A result names the frame of the dealer's video it belongs to (`round.result`'s `media_ts`):
//! the newest frame the node had received when the result came in, or, with `captured_at`, the
//! frame captured at that wall-clock moment, mapped through the dealer's RTCP sender reports.
//! The dealer is the client's synthetic publisher (one H.264 frame every 33 ms, RTP timestamps
//! 3000 apart, a sender report a second), so the test knows the timestamp and the send time of
//! every frame.

mod common;

use common::TestNode;
use common::control::{WsPlayer, dealer, hello, token_for};
use common::video_map::frames_map_to_the_dealers;
use serde_json::{Value, json};
use std::time::Duration;
use tablecast::auth::TokenRole;

/// One frame at 30 frames a second, in RTP ticks of the 90 kHz video clock.
const FRAME: i64 = 3_000;

/// The signed distance from `b` to `a` in RTP's 32-bit timestamp space.
fn ticks(a: u64, b: u32) -> i64 {
    i64::from((a as u32).wrapping_sub(b) as i32)
}

/// A node whose demo table opens rounds only when the dealer says (the built-in one opens the
/// next by itself).
async fn node() -> TestNode {
    TestNode::start_with(|c| {
        let table: toml::Table =
            toml::from_str("id = \"demo\"\nbetting_window_secs = 30\n").expect("table toml");
        c.tables = vec![table];
    })
    .await
}

/// Plays one round over HTTP to its result, with `body` as the result; returns the answer.
async fn round_to_result(node: &TestNode, body: Value) -> Value {
    for action in ["open", "close"] {
        let (status, text) = dealer(node, action, None).await;
        assert_eq!(status, 200, "round/{action}: {text}");
    }
    let (status, text) = dealer(node, "result", Some(body)).await;
    assert_eq!(status, 200, "round/result: {text}");
    serde_json::from_str(&text).expect("a JSON answer")
}

/// The `round.result` events a watcher has seen, in order.
fn results(watcher: &WsPlayer) -> Vec<Value> {
    watcher
        .got()
        .into_iter()
        .map(|g| g.msg)
        .filter(|m| m["type"] == "round.result")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_names_the_frame_received_or_the_one_captured_at_its_moment() {
    let node = node().await;
    let publisher = common::dealer(&node, std::time::Instant::now()).await;
    let watcher = WsPlayer::connect(&node, "demo").await;
    watcher.send(hello(&token_for(&node, TokenRole::Player, "watcher"), None));
    let frames = || publisher.stats().frames;
    common::wait_until(
        Duration::from_secs(10),
        "the dealer has sent a second of video",
        async || frames().len(),
        |n| *n >= 30,
    )
    .await;

    // No media_ts and no captured_at: the newest frame the node had received. It was sent no
    // later than the newest frame sent once the answer came, and not before the newest one
    // sent when the request left, less a frame or two in flight.
    let sent_before = frames().back().expect("frames").0;
    let answer = round_to_result(&node, json!({"outcome": "banker"})).await;
    let sent_after = frames().back().expect("frames").0;
    let named = answer["media_ts"]
        .as_u64()
        .unwrap_or_else(|| panic!("the answer names no frame: {answer}"));
    let (from_before, to_after) = (ticks(named, sent_before), ticks(named, sent_after));
    println!(
        "received: named {named}, {from_before} ticks from the newest frame sent before the \
         request, {to_after} after the answer"
    );
    assert!(
        from_before >= -2 * FRAME && to_after <= 0,
        "named {named}: {from_before} ticks from the newest frame sent before the request \
         ({sent_before}), {to_after} from the newest after the answer ({sent_after})"
    );
    assert_eq!(named % FRAME as u64, 0, "not a frame's timestamp: {named}");
    let received = named;

    // captured_at: the frame captured at that moment. The synthetic dealer's frames are
    // captured as they are sent, and it sends a sender report a second; take a frame sent half
    // a second ago and name a moment 10 ms into it. Until the dealer's first sender report the
    // node cannot map it and answers without media_ts, so rounds are played until it can.
    let mut attempts = 0;
    let (target, answer) = loop {
        attempts += 1;
        let recent = frames();
        let now = tablecast::control::server_ms();
        let &(ts, at, _) = recent
            .iter()
            .rev()
            .find(|(_, at, _)| now.saturating_sub(*at) >= 500)
            .expect("a frame half a second old");
        let answer = round_to_result(
            &node,
            json!({"outcome": ["player"], "captured_at": at + 10}),
        )
        .await;
        if answer["media_ts"].is_u64() {
            break (ts, answer);
        }
        assert!(
            attempts < 20,
            "after {attempts} rounds, captured_at still names no frame: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let named = answer["media_ts"].as_u64().expect("checked");
    println!(
        "captured_at: named {named}, frame {target} wanted ({} ticks), after {attempts} rounds",
        ticks(named, target)
    );
    assert_eq!(
        ticks(named, target),
        0,
        "captured_at 10 ms into frame {target} named {named}"
    );

    // Every watcher gets the named frame in the public event (and the log keeps it).
    let seen = common::wait_until(
        Duration::from_secs(10),
        "the watcher has the results",
        async || results(&watcher),
        |r| r.last().is_some_and(|e| e["round"] == answer["round"]),
    )
    .await;
    assert_eq!(seen[0]["media_ts"].as_u64(), Some(received));
    assert_eq!(seen.last().expect("two")["media_ts"].as_u64(), Some(named));
    watcher.close().await;
    publisher.close().await.ok();
    node.stop().await;
}

/// A dealer's `dealer.result` over its control connection, naming no frame: the node that takes
/// it in names the newest frame it received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_control_connection_names_its_frame_too() {
    let node = node().await;
    let publisher = common::dealer(&node, std::time::Instant::now()).await;
    let frames = || publisher.stats().frames;
    common::wait_until(
        Duration::from_secs(10),
        "the dealer has sent video",
        async || frames().len(),
        |n| *n >= 10,
    )
    .await;
    let console = WsPlayer::connect(&node, "demo").await;
    console.send(hello(
        &token_for(&node, TokenRole::Dealer, "dealer-1"),
        None,
    ));
    let said = |ty: &'static str| {
        let console = &console;
        async move {
            common::wait_until(
                Duration::from_secs(10),
                ty,
                async || {
                    console
                        .got()
                        .into_iter()
                        .map(|g| g.msg)
                        .find(|m| m["type"] == ty)
                },
                Option::is_some,
            )
            .await
            .expect("found")
        }
    };
    said("welcome").await;
    console.send(json!({"type": "dealer.open", "id": "c-1"}));
    said("round.opened").await;
    console.send(json!({"type": "dealer.close", "id": "c-2"}));
    said("betting.closed").await;
    let sent_before = frames().back().expect("frames").0;
    console.send(json!({"type": "dealer.result", "id": "c-3", "outcome": "tie"}));
    let event = said("round.result").await;
    let sent_after = frames().back().expect("frames").0;
    let named = event["media_ts"]
        .as_u64()
        .unwrap_or_else(|| panic!("the event names no frame: {event}"));
    println!(
        "control connection: named {named}, {} ticks from the newest frame sent before",
        ticks(named, sent_before)
    );
    assert!(
        ticks(named, sent_before) >= -2 * FRAME && ticks(named, sent_after) <= 0,
        "named {named}; newest frame sent before {sent_before}, after {sent_after}"
    );
    console.close().await;
    publisher.close().await.ok();
    node.stop().await;
}

/// Each player is told privately how its video's timestamps map to the dealer's frames
/// (`video.map`), and the mapping is right: every frame the player receives after it maps to a
/// frame the dealer sent. Through a dealer who reconnects (a new stream, a new clock and a new
/// offset), the player gets a new map, and the next result names its frame in the new clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_player_is_told_how_its_frames_map_to_the_dealers() {
    let node = node().await;
    let epoch = std::time::Instant::now();
    let first = common::dealer(&node, epoch).await;
    let player = common::player(&node, Default::default(), epoch).await;

    let (clock1, n) = frames_map_to_the_dealers(&player, &first, 0, "the player").await;

    // The dealer reconnects: a new WHIP session, a new SSRC and timestamps.
    first.close().await.ok();
    let second = common::dealer(&node, epoch).await;
    let (clock2, _) = frames_map_to_the_dealers(&player, &second, n, "the player").await;
    assert_ne!(clock1, clock2, "a new dealer stream is a new clock");

    // A result now names its frame in the new clock, which the player's map names too.
    let answer = round_to_result(&node, json!({"outcome": "tie"})).await;
    assert_eq!(
        answer["media_clock"].as_u64(),
        Some(u64::from(clock2)),
        "the result's clock: {answer}"
    );
    player.close().await.ok();
    second.close().await.ok();
    node.stop().await;
}

/// A player whose table events come over a WebSocket (no `control` channel) gets its
/// `video.map` there, once its `video.view` names its WHEP session; a stranger's socket naming
/// the same session gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_on_a_websocket_gets_its_map_there() {
    let node = node().await;
    let epoch = std::time::Instant::now();
    let publisher = common::dealer(&node, epoch).await;
    let player = common::player(&node, common::media_only(), epoch).await;
    let session = player
        .resource
        .location
        .rsplit('/')
        .next()
        .expect("a Location")
        .to_owned();
    common::wait_until(
        Duration::from_secs(10),
        "the player has video",
        async || player.stats().video.len(),
        |n| *n > 0,
    )
    .await;
    let view = json!({"type": "video.view", "width": 640, "height": 360, "session": session});
    let stranger = WsPlayer::connect(&node, "demo").await;
    stranger.send(hello(
        &token_for(&node, TokenRole::Player, "stranger"),
        None,
    ));
    stranger.send(view.clone());
    let own = WsPlayer::connect(&node, "demo").await;
    // The player's own user (the test client's tokens name "tester").
    own.send(hello(&token_for(&node, TokenRole::Player, "tester"), None));
    own.send(view);
    let map_of = |ws: &WsPlayer| {
        ws.got()
            .into_iter()
            .map(|g| g.msg)
            .find(|m| m["type"] == "video.map")
    };
    let map = common::wait_until(
        Duration::from_secs(10),
        "the player's WebSocket has a video.map",
        async || map_of(&own),
        Option::is_some,
    )
    .await
    .expect("found");
    // It maps the player's frames to exactly the dealer's (each payload says which frame).
    let (rtp, media_ts) = (
        map["rtp"].as_u64().expect("rtp") as u32,
        map["media_ts"].as_u64().expect("media_ts") as u32,
    );
    assert_eq!(map["session"].as_str(), Some(session.as_str()), "{map}");
    let sent: std::collections::HashMap<u64, u32> = publisher
        .stats()
        .frames
        .iter()
        .map(|&(ts, _, stamp)| (stamp, ts))
        .collect();
    let newest = player
        .stats()
        .video
        .into_iter()
        .rev()
        .find(|r| r.sent_us.is_some_and(|s| sent.contains_key(&s)))
        .expect("a packet of a remembered frame");
    let named = media_ts.wrapping_add(newest.timestamp.wrapping_sub(rtp));
    assert_eq!(
        Some(named),
        newest.sent_us.and_then(|s| sent.get(&s)).copied(),
        "{map}"
    );
    assert!(
        map_of(&stranger).is_none(),
        "a stranger naming the session got its map"
    );
    own.close().await;
    stranger.close().await;
    player.close().await.ok();
    publisher.close().await.ok();
    node.stop().await;
}
