//! The control plane end to end on a real node: players on data channels and on WebSockets
//! watch scripted rounds, bet, resume after a drop, and share the table with hostile clients.

mod common;

use common::TestNode;
use common::control::{Player, WsPlayer, dealer, hello, seqs, snapshot, token_for};
use futures_util::future::join_all;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tablecast::auth::TokenRole;

/// A node whose demo table opens rounds only when the dealer says so.
async fn node(window_secs: u32) -> TestNode {
    TestNode::start_with(|c| {
        let table: toml::Table = toml::from_str(&format!(
            "id = \"demo\"\nbetting_window_secs = {window_secs}\n"
        ))
        .expect("table toml");
        c.tables = vec![table];
    })
    .await
}

fn is(ty: &'static str) -> impl Fn(&Value) -> bool {
    move |m| m["type"] == ty
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_data_channel_and_fifty_websocket_players_see_one_identical_round() {
    let node = node(30).await;
    let dc = join_all((0..50).map(|i| {
        let node = &node;
        async move { Player::dc(node, &format!("dc-{i}"), None).await }
    }))
    .await;
    let ws = join_all((0..50).map(|i| {
        let node = &node;
        async move { Player::ws(node, &format!("ws-{i}"), None).await }
    }))
    .await;
    let players: Vec<Player> = dc.into_iter().chain(ws).collect();
    for p in &players {
        let welcome = p.wait_for("welcome", is("welcome")).await;
        assert_eq!(welcome["seq"], 0, "a fresh table");
        assert_eq!(welcome["snapshot"]["state"], "idle");
    }

    let (status, body) = dealer(&node, "open", None).await;
    assert_eq!(status, 200, "{body}");
    let round = serde_json::from_str::<Value>(&body).unwrap()["round"].clone();
    let spots = ["player", "banker", "tie"];
    let mut expected = json!({"player": 0u64, "banker": 0u64, "tie": 0u64});
    for (i, p) in players.iter().enumerate() {
        p.wait_for("round.opened", is("round.opened")).await;
        let spot = spots[i % 3];
        let amount = 100 + i as u64;
        expected[spot] = json!(expected[spot].as_u64().unwrap() + amount);
        p.send(json!({"type": "bet.place", "id": format!("b-{i}"), "round": round, "spot": spot, "amount": amount}));
    }
    for (i, p) in players.iter().enumerate() {
        let id = format!("b-{i}");
        let answer = p
            .wait_for("the bet's answer", |m| m["id"] == id.as_str())
            .await;
        assert_eq!(answer["type"], "bet.accepted", "{answer}");
    }
    let (status, body) = dealer(&node, "close", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = dealer(&node, "result", Some(json!({"outcome": "player"}))).await;
    assert_eq!(status, 200, "{body}");
    for p in &players {
        p.wait_for("round.settled", is("round.settled")).await;
    }

    let first = seqs(&players[0].messages());
    assert_eq!(
        first,
        (1..=first.len() as u64).collect::<Vec<_>>(),
        "seq starts at 1 and has no gap"
    );
    for (i, p) in players.iter().enumerate() {
        let msgs = p.messages();
        assert_eq!(seqs(&msgs), first, "player {i} saw another sequence");
        let totals = msgs
            .iter()
            .find(|m| m["type"] == "totals" && m["final"] == true)
            .expect("final totals");
        for spot in spots {
            assert_eq!(
                totals["spots"][spot]["amount"], expected[spot],
                "final totals of {spot} are the sum of every accepted bet"
            );
        }
        assert_eq!(totals["bettors"], 100);
        let payout = msgs.iter().find(|m| m["type"] == "payout").expect("payout");
        let amount = 100 + i as u64;
        let want = match spots[i % 3] {
            "player" => 2 * amount,
            _ => 0,
        };
        assert_eq!(payout["total"], want, "player {i}: {payout}");
    }
    for p in players {
        p.close().await;
    }
    node.stop().await;
}

/// Runs whole rounds over HTTP until the table's seq has moved `events` past `from`.
async fn churn(node: &TestNode, from: u64, events: u64) -> u64 {
    loop {
        let last = snapshot(node).await["last_seq"].as_u64().unwrap();
        if last >= from + events {
            return last;
        }
        for (action, body) in [
            ("open", None),
            ("close", None),
            ("result", Some(json!({"outcome": "banker"}))),
        ] {
            let (status, text) = dealer(node, action, body).await;
            assert_eq!(status, 200, "{action}: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_cut_off_for_three_seconds_resumes_with_every_seq_exactly_once() {
    let node = node(30).await;
    let watcher = Player::ws(&node, "watcher", None).await;
    watcher.wait_for("welcome", is("welcome")).await;
    churn(&node, 0, 10).await;

    for transport in ["data channel", "WebSocket"] {
        let node = &node;
        let connect = |resume| async move {
            match transport {
                "data channel" => Player::dc(node, "roamer", resume).await,
                _ => Player::ws(node, "roamer", resume).await,
            }
        };
        let before = connect(None).await;
        let welcome = before.wait_for("welcome", is("welcome")).await;
        let start = welcome["seq"].as_u64().unwrap();
        let seen_to = churn(node, start, 5).await;
        before
            .wait_for("the live events", |m| m["seq"] == seen_to)
            .await;
        let mut seen = seqs(&before.messages());
        let last_seen = *seen.last().unwrap();
        before.close().await;

        let cut = Instant::now();
        let target = churn(node, last_seen, 50).await;
        // Not a wait: the player stays away three seconds in all, the gap it must resume across.
        tokio::time::sleep(Duration::from_secs(3).saturating_sub(cut.elapsed())).await;

        let after = connect(Some(last_seen)).await;
        let resumed = after.wait_for("resumed", is("resumed")).await;
        assert_eq!(resumed["after_seq"], last_seen, "{transport}");
        after
            .wait_for("the missed events", |m| m["seq"] == target)
            .await;
        let more = churn(node, target, 3).await;
        after.wait_for("live events", |m| m["seq"] == more).await;
        seen.extend(seqs(&after.messages()));
        assert_eq!(
            seen,
            (start + 1..=more).collect::<Vec<_>>(),
            "{transport}: every seq from the welcome on, exactly once, in order"
        );
        after.close().await;
    }
    watcher
        .wait_for("the end", |m| m["type"] == "round.settled")
        .await;
    let all = seqs(&watcher.messages());
    assert_eq!(all, (1..=all.len() as u64).collect::<Vec<_>>());
    watcher.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_get_errors_and_are_closed_while_a_good_player_misses_nothing() {
    let node = node(30).await;
    let good_ws = Player::ws(&node, "good-ws", None).await;
    let good_dc = Player::dc(&node, "good-dc", None).await;
    good_ws.wait_for("welcome", is("welcome")).await;
    good_dc.wait_for("welcome", is("welcome")).await;

    // Each kind of bad message gets its own error, and the connection stays.
    let bad = WsPlayer::connect(&node, "demo").await;
    bad.send(hello(&token_for(&node, TokenRole::Player, "bad"), None));
    bad.send_raw(format!(
        r#"{{"type":"chat","id":"x","text":"{}"}}"#,
        "a".repeat(9000)
    ));
    bad.send_raw("{not json".into());
    bad.send_raw(r#"{"type":"teleport"}"#.into());
    bad.send_raw(r#"{"type":"bet.place","id":"b1"}"#.into());
    bad.send(json!({"type": "ping", "client_ms": 7}));
    let deadline = Instant::now() + Duration::from_secs(10);
    let codes = loop {
        let got: Vec<Value> = bad.got().into_iter().map(|g| g.msg).collect();
        if got.iter().any(|m| m["type"] == "pong") {
            break got
                .iter()
                .filter(|m| m["type"] == "error")
                .map(|m| m["code"].as_str().unwrap_or("").to_owned())
                .collect::<Vec<_>>();
        }
        assert!(Instant::now() < deadline, "no pong: {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        codes,
        ["too_large", "malformed", "unknown_type", "invalid_message"],
        "one error per bad message, in order, and the ping still answered"
    );
    assert!(
        bad.is_closed().is_none(),
        "the connection stays after a few bad messages"
    );

    // Flooders on both transports are closed with a reason while rounds go on.
    let flood_ws = WsPlayer::connect(&node, "demo").await;
    flood_ws.send(hello(
        &token_for(&node, TokenRole::Player, "flood-ws"),
        None,
    ));
    let flood_dc = Player::dc(&node, "flood-dc", None).await;
    flood_dc.wait_for("welcome", is("welcome")).await;
    let flooding = async {
        for i in 0..2000 {
            flood_ws.send_raw(format!("garbage {i}"));
            flood_dc.send_raw(format!("garbage {i}"));
            if i % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
    };
    let (_, last) = tokio::join!(flooding, churn(&node, 0, 40));

    let deadline = Instant::now() + Duration::from_secs(10);
    while flood_ws.is_closed().is_none() {
        assert!(
            Instant::now() < deadline,
            "the WebSocket flooder is still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reason = flood_ws.is_closed().unwrap();
    let notice = flood_ws
        .got()
        .into_iter()
        .rfind(|g| g.msg["type"] == "error")
        .map(|g| g.msg["message"].to_string())
        .unwrap_or_default();
    assert!(
        reason.contains("bad or excess messages") || notice.contains("bad or excess messages"),
        "closed with {reason:?} after {notice}"
    );
    let dc_errors = flood_dc
        .wait_for("the closing notice", |m| {
            m["type"] == "error"
                && m["message"]
                    .as_str()
                    .is_some_and(|s| s.contains("closed after"))
        })
        .await;
    assert!(
        dc_errors["message"]
            .as_str()
            .unwrap()
            .contains("bad or excess")
    );

    for good in [&good_ws, &good_dc] {
        good.wait_for("the last event", |m| m["seq"] == last).await;
        assert_eq!(seqs(&good.messages()), (1..=last).collect::<Vec<_>>());
        assert!(
            !good.messages().iter().any(|m| m["type"] == "error"),
            "the good player got no errors"
        );
    }
    if let Player::Ws(ws) = &good_ws {
        let worst = ws
            .got()
            .iter()
            .filter_map(|g| Some(g.at_ms.saturating_sub(g.msg["server_ms"].as_u64()?)))
            .max()
            .unwrap_or(0);
        assert!(
            worst < 1000,
            "an event reached the good player {worst} ms late"
        );
    }
    for p in [good_ws, good_dc, flood_dc] {
        p.close().await;
    }
    bad.close().await;
    flood_ws.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bets_are_idempotent_rate_limited_and_the_totals_add_up() {
    let node = node(30).await;
    let p = Player::ws(&node, "eager", None).await;
    p.wait_for("welcome", is("welcome")).await;
    let (status, body) = dealer(&node, "open", None).await;
    assert_eq!(status, 200, "{body}");
    p.wait_for("round.opened", is("round.opened")).await;
    for i in 0..60 {
        p.send(json!({"type": "bet.place", "id": format!("r-{i}"), "round": 1, "spot": "tie", "amount": 100}));
    }
    // The same bet again, once the limit has refilled: the first answer again, counted once.
    // Only time refills the limit, and nothing shows it refilled without spending it: a sleep.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    p.send(json!({"type": "bet.place", "id": "r-0", "round": 1, "spot": "tie", "amount": 100}));
    let deadline = Instant::now() + Duration::from_secs(10);
    let answers = loop {
        let answers: Vec<Value> = p
            .messages()
            .into_iter()
            .filter(|m| m["id"].as_str().is_some_and(|id| id.starts_with("r-")))
            .collect();
        if answers.len() == 61 {
            break answers;
        }
        assert!(Instant::now() < deadline, "{} answers", answers.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let accepted: std::collections::BTreeSet<&str> = answers
        .iter()
        .filter(|m| m["type"] == "bet.accepted")
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    let limited = answers
        .iter()
        .filter(|m| m["type"] == "error" && m["code"] == "rate_limited")
        .count();
    assert!(limited > 0, "60 bets at once pass the burst of 20");
    assert!(
        accepted.len() >= 20,
        "the burst is accepted: {}",
        accepted.len()
    );
    assert!(accepted.contains("r-0"));
    assert_eq!(
        answers
            .iter()
            .filter(|m| m["id"] == "r-0" && m["type"] == "bet.accepted")
            .count(),
        2,
        "a repeated bet id gets the same answer again"
    );
    let (status, body) = dealer(&node, "close", None).await;
    assert_eq!(status, 200, "{body}");
    let totals = p
        .wait_for("final totals", |m| {
            m["type"] == "totals" && m["final"] == true
        })
        .await;
    assert_eq!(
        totals["spots"]["tie"]["amount"],
        100 * accepted.len() as u64
    );
    assert_eq!(totals["spots"]["tie"]["bettors"], 1);

    // HTTP refusals say why, with their status.
    let (status, body) = dealer(&node, "close", None).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = dealer(&node, "result", Some(json!({"outcome": "dragon"}))).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("dragon"), "{body}");
    let player_token = token_for(&node, TokenRole::Player, "eager");
    let r = node
        .client
        .post(node.url("/api/v1/tables/demo/round/void"))
        .bearer_auth(player_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "a player may not void a round");
    let r = node
        .client
        .post(node.url("/api/v1/tables/demo/round/open"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // A token for the demo table learns nothing about another table; an operator of every
    // table learns that it is not here.
    let r = node
        .client
        .get(node.url("/api/v1/tables/nope"))
        .bearer_auth(token_for(&node, TokenRole::Player, "eager"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let operator = node
        .node
        .issue_token(TokenRole::Operator, "*", "op", Duration::from_secs(60))
        .unwrap();
    let r = node
        .client
        .get(node.url("/api/v1/tables/nope"))
        .bearer_auth(operator)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let (status, body) = dealer(&node, "void", Some(json!({"reason": "shoe change"}))).await;
    assert_eq!(status, 200, "{body}");
    let voided = p.wait_for("round.voided", is("round.voided")).await;
    assert_eq!(voided["reason"], "shoe change");
    let refund = p.wait_for("refund", is("payout")).await;
    assert_eq!(
        refund["total"],
        100 * accepted.len() as u64,
        "void refunds every bet"
    );
    p.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_the_tables_sessions_and_drops_one() {
    let node = node(30).await;
    let player = Player::dc(&node, "dropped", None).await;
    player.wait_for("welcome", is("welcome")).await;
    let operator = token_for(&node, TokenRole::Operator, "ops-1");
    let list = |token: String| {
        let node = &node;
        async move {
            node.client
                .get(node.url("/api/v1/tables/demo/sessions"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let r = list(token_for(&node, TokenRole::Player, "dropped")).await;
    assert_eq!(r.status().as_u16(), 403, "players may not list sessions");
    let sessions: Vec<Value> = list(operator.clone()).await.json().await.unwrap();
    let mine = sessions
        .iter()
        .find(|s| s["user"] == "dropped")
        .unwrap_or_else(|| panic!("the player's session is listed: {sessions:?}"));
    assert_eq!(mine["role"], "subscriber");
    assert_eq!(mine["control"], true);
    assert!(mine["connected_ms"].is_u64(), "{mine}");
    let session = mine["session"].as_str().unwrap().to_owned();

    let drop = |path: String| {
        let node = &node;
        let operator = operator.clone();
        async move {
            node.client
                .delete(node.url(&path))
                .bearer_auth(operator)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        drop("/api/v1/tables/demo/sessions/00nosuchsession".into()).await,
        404
    );
    assert_eq!(
        drop(format!("/api/v1/tables/demo/sessions/{session}")).await,
        204
    );
    let sessions: Vec<Value> = list(operator.clone()).await.json().await.unwrap();
    assert!(
        !sessions.iter().any(|s| s["session"] == session.as_str()),
        "the dropped session is gone: {sessions:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = node
            .client
            .get(node.metrics_url())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("tablecast_control_connections{table=\"demo\"} 0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped player is still among the table's control connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    player.close().await;
    node.stop().await;
}

/// `[[tables]]` for the demo table with `n` spots named like a roulette layout's.
fn spots_table(n: usize) -> toml::Table {
    let mut text = String::from("id = \"demo\"\nbetting_window_secs = 30\n");
    for i in 0..n {
        text.push_str(&format!(
            "[[spots]]\nid = \"split-{i}-{}\"\nodds = \"17:1\"\nmin_bet = 1\nmax_bet = 100000\nmax_per_player_round = 100000\n",
            i + 3
        ));
    }
    toml::from_str(&text).expect("table toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_at_the_message_limit_reaches_data_channel_players_and_one_spot_more_is_refused() {
    // The smallest limit, so the table at its edge is small enough to bet on every spot.
    const LIMIT: usize = 4096;
    let fits = (1..100)
        .take_while(|&n| {
            let config: tablecast::protocol::TableConfig =
                toml::Value::Table(spots_table(n)).try_into().unwrap();
            config.check_message_size(LIMIT).is_ok()
        })
        .last()
        .unwrap();

    let dir = common::temp_dir("too-large");
    let mut config = common::test_config(&dir);
    config.control.max_message_bytes = LIMIT;
    config.tables = vec![spots_table(fits + 1)];
    let refused = match tablecast::app::start(config).await {
        Ok(_) => panic!("a node with a table too large for its data channels started"),
        Err(e) => e.to_string(),
    };
    assert!(
        refused.contains("control.max_message_bytes") && refused.contains("fewer spots"),
        "the refusal says what to change: {refused}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    let node = TestNode::start_with(|c| {
        c.control.max_message_bytes = LIMIT;
        c.tables = vec![spots_table(fits)];
    })
    .await;
    let p = Player::dc(&node, "every-spot", None).await;
    let welcome = p.wait_for("welcome", is("welcome")).await;
    assert_eq!(
        welcome["snapshot"]["table"]["spots"]
            .as_array()
            .map(|s| s.len()),
        Some(fits)
    );
    let (status, body) = dealer(&node, "open", None).await;
    assert_eq!(status, 200, "{body}");
    p.wait_for("round.opened", is("round.opened")).await;
    // A bet on every spot, so the final totals name every spot with a sum.
    for i in 0..fits {
        let spot = format!("split-{i}-{}", i + 3);
        p.send(json!({"type": "bet.place", "id": format!("b-{i}"), "round": 1, "spot": spot, "amount": 100_000}));
        // Pacing the bets to stay within the bet rate limit (10/s, burst 20).
        tokio::time::sleep(Duration::from_millis(110)).await;
    }
    let (status, body) = dealer(&node, "close", None).await;
    assert_eq!(status, 200, "{body}");
    let totals = p
        .wait_for("final totals", |m| {
            m["type"] == "totals" && m["final"] == true
        })
        .await;
    let spots = totals["spots"].as_object().expect("spots");
    assert_eq!(spots.len(), fits);
    assert!(
        spots.values().all(|s| s["amount"] == 100_000),
        "every bet is in the totals: {totals}"
    );
    // A second player joining now gets the whole snapshot, totals included, in one welcome.
    let late = Player::dc(&node, "late", None).await;
    let welcome = late.wait_for("welcome", is("welcome")).await;
    assert_eq!(
        welcome["snapshot"]["totals"]["spots"]
            .as_object()
            .map(|s| s.len()),
        Some(fits)
    );
    node.node.stop().await;
}
