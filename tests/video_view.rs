//! `video.view` end to end on a real node: a player's page says how it shows the video, over its
//! WHEP session's data channel or over a WebSocket naming that session, and the node records it
//! on that session (as the operator's session listing shows). Nobody else can steer it, and a
//! bad view gets an `error` event, not a closed connection.

mod common;

use common::TestNode;
use common::control::{Player, WsPlayer, hello, token_for};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tablecast::auth::TokenRole;

fn is(ty: &'static str) -> impl Fn(&Value) -> bool {
    move |m| m["type"] == ty
}

/// `user`'s WHEP session as the operator's listing shows it.
async fn session_of(node: &TestNode, user: &str) -> Value {
    let sessions: Vec<Value> = node
        .client
        .get(node.url("/api/v1/tables/demo/sessions"))
        .bearer_auth(token_for(node, TokenRole::Operator, "ops-1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    sessions
        .into_iter()
        .find(|s| s["user"] == user && s["role"] == "subscriber")
        .unwrap_or_else(|| panic!("{user}'s session is listed"))
}

/// Waits until `user`'s session shows `view`.
async fn wait_for_view(node: &TestNode, user: &str, view: Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let session = session_of(node, user).await;
        if session["view"] == view {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user}'s view never became {view}: {session}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `msg` and then a `ping`, and waits for the `pong`: by then the node has handed the
/// message on (to the session's media worker, whose queue the listing also waits in).
async fn send_and_sync(ws: &WsPlayer, msg: Value, client_ms: u64) {
    ws.send(msg);
    ws.send(json!({"type": "ping", "client_ms": client_ms}));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ws
        .got()
        .iter()
        .any(|g| g.msg["type"] == "pong" && g.msg["client_ms"] == client_ms)
    {
        assert!(Instant::now() < deadline, "no pong: {:?}", ws.got());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_players_view_reaches_its_own_session_and_nobody_elses_view_does() {
    let node = TestNode::start().await;
    let alice = Player::dc(&node, "alice", None).await;
    alice.wait_for("welcome", is("welcome")).await;
    let before = session_of(&node, "alice").await;
    assert_eq!(
        before["view"],
        json!({"width": 0, "height": 0, "hidden": false, "quality": "auto"}),
        "no view yet"
    );
    let session = before["session"].as_str().unwrap().to_owned();

    // On the data channel the session is the channel's own.
    alice.send(json!({"type": "video.view", "width": 390.4, "height": 219, "quality": "low"}));
    let alices = json!({"width": 390, "height": 219, "hidden": false, "quality": "low"});
    wait_for_view(&node, "alice", alices.clone()).await;

    // Mallory, on a WebSocket, names alice's session: nothing happens to it.
    let mallory = WsPlayer::connect(&node, "demo").await;
    mallory.send(hello(&token_for(&node, TokenRole::Player, "mallory"), None));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mallory.got().iter().any(|g| g.msg["type"] == "welcome") {
        assert!(Instant::now() < deadline, "mallory has no welcome");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    send_and_sync(
        &mallory,
        json!({"type": "video.view", "width": 16, "height": 9, "hidden": true, "quality": "high", "session": session}),
        1,
    )
    .await;
    assert_eq!(session_of(&node, "alice").await["view"], alices);

    // Bad views are answered with an error and the socket stays.
    send_and_sync(
        &mallory,
        json!({"type": "video.view", "width": 16, "height": 9, "quality": "ultra", "session": session}),
        2,
    )
    .await;
    send_and_sync(
        &mallory,
        json!({"type": "video.view", "width": 16, "height": 9}),
        3,
    )
    .await;
    let errors: Vec<Value> = mallory
        .got()
        .into_iter()
        .map(|g| g.msg)
        .filter(|m| m["type"] == "error")
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0]["code"], "invalid_message");
    assert!(
        errors[0]["message"].as_str().unwrap().contains("ultra"),
        "{errors:?}"
    );
    assert_eq!(errors[1]["code"], "invalid_message");
    assert!(
        errors[1]["message"].as_str().unwrap().contains("session"),
        "{errors:?}"
    );
    assert!(mallory.is_closed().is_none());
    assert_eq!(session_of(&node, "alice").await["view"], alices);

    // Alice's own WebSocket names her session, and it takes.
    let alice_ws = WsPlayer::connect(&node, "demo").await;
    alice_ws.send(hello(&token_for(&node, TokenRole::Player, "alice"), None));
    send_and_sync(
        &alice_ws,
        json!({"type": "video.view", "width": 99999, "height": 1080, "hidden": true, "session": session}),
        4,
    )
    .await;
    wait_for_view(
        &node,
        "alice",
        json!({"width": 16384, "height": 1080, "hidden": true, "quality": "auto"}),
    )
    .await;

    alice_ws.close().await;
    mallory.close().await;
    alice.close().await;
    node.stop().await;
}
