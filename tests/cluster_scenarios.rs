//! Control-plane scenarios written once and run against one node alone and against three nodes
//! on a real redis-server, with the players spread round-robin over the nodes. Whichever node a
//! player is on, it sees the same table.

mod common;

use common::control::{Player, dealer, seqs};
use futures_util::future::join_all;
use serde_json::{Value, json};

/// The demo table, whose rounds the dealer opens (no auto-open), with a betting window long
/// enough for every player of a scenario to bet.
const DEALER_OPENS_ROUNDS: &str = r#"
[[tables]]
id = "demo"
betting_window_secs = 60
"#;

const SPOTS: [&str; 3] = ["player", "banker", "tie"];

fn is(ty: &'static str) -> impl Fn(&Value) -> bool {
    move |m| m["type"] == ty
}

cluster_scenarios! {
    /// Thirty WebSocket players and six data-channel players, spread over the nodes, each bet on
    /// a round the dealer runs over REST on the first node: every player sees the same gapless
    /// sequence of events, and every bet is accepted once and counted in the final totals. (A
    /// data-channel player's WHEP offer to a node that does not own the table is redirected to
    /// the owner, as media is until the cascade.)
    async fn players_on_every_node_see_one_round(cluster, tables = DEALER_OPENS_ROUNDS) {
        const WS_PLAYERS: usize = 30;
        const DC_PLAYERS: usize = 6;
        const PLAYERS: usize = WS_PLAYERS + DC_PLAYERS;
        let players = join_all((0..PLAYERS).map(|i| {
            let node = cluster.node_for(i);
            async move {
                if i < WS_PLAYERS {
                    Player::ws(node, &format!("ws-{i}"), None).await
                } else {
                    Player::dc(node, &format!("dc-{i}"), None).await
                }
            }
        }))
        .await;
        for p in &players {
            let welcome = p.wait_for("welcome", is("welcome")).await;
            assert_eq!(welcome["snapshot"]["state"], "idle", "{welcome}");
        }

        let (status, body) = dealer(cluster.node(0), "open", None).await;
        assert_eq!(status, 200, "open on {}: {body}", cluster.node(0).base_url());
        let opened: Value = serde_json::from_str(&body).expect("open answers JSON");
        let round = opened["round"].clone();
        let mut expected = json!({"player": 0u64, "banker": 0u64, "tie": 0u64});
        for (i, p) in players.iter().enumerate() {
            p.wait_for("round.opened", is("round.opened")).await;
            let spot = SPOTS[i % SPOTS.len()];
            let amount = 100 + i as u64;
            expected[spot] = json!(expected[spot].as_u64().unwrap() + amount);
            p.send(json!({
                "type": "bet.place", "id": format!("b-{i}"), "round": round,
                "spot": spot, "amount": amount,
            }));
        }
        for (i, p) in players.iter().enumerate() {
            let id = format!("b-{i}");
            let answer = p.wait_for("the bet's answer", |m| m["id"] == id.as_str()).await;
            assert_eq!(answer["type"], "bet.accepted", "player {i}: {answer}");
        }

        let (status, body) = dealer(cluster.node(0), "close", None).await;
        assert_eq!(status, 200, "close: {body}");
        let (status, body) =
            dealer(cluster.node(0), "result", Some(json!({"outcome": "player"}))).await;
        assert_eq!(status, 200, "result: {body}");
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
            let node = cluster.node_for(i).id.as_str();
            let msgs = p.messages();
            assert_eq!(seqs(&msgs), first, "player {i} on node {node} saw another sequence");
            let id = format!("b-{i}");
            let accepted = msgs
                .iter()
                .filter(|m| m["type"] == "bet.accepted" && m["id"] == id.as_str())
                .count();
            assert_eq!(accepted, 1, "player {i} on node {node}: bet {id} accepted once");
            let totals = msgs
                .iter()
                .find(|m| m["type"] == "totals" && m["final"] == true)
                .unwrap_or_else(|| panic!("player {i} on node {node} got the final totals"));
            for spot in SPOTS {
                assert_eq!(
                    totals["spots"][spot]["amount"], expected[spot],
                    "player {i} on node {node}: final totals of {spot} are the sum of every bet"
                );
            }
            assert_eq!(totals["bettors"], PLAYERS, "player {i} on node {node}");
        }
        for p in players {
            p.close().await;
        }
    }
}
