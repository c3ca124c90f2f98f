//! `GET /api/v1/tables/{table}/join`: which node a player should use. Three node processes on a
//! real redis-server, in regions `eu`, `us` and `us`: the answer is the least-loaded serving
//! node of the player's region, else the least-loaded anywhere, with every other serving node
//! after it; a refused request gets its status.

mod common;

use common::NodeRef;
use common::cluster::{Cluster, THREE_IDS};
use common::control::Player;
use common::wait_until;
use serde_json::Value;
use std::time::Duration;
use tablecast::auth::TokenRole;

const TABLES: &str = r#"
[[tables]]
id = "demo"
"#;

/// `GET /api/v1/tables/demo/join{query}` on `node` with a player token: status and body.
async fn join(node: &(impl NodeRef + ?Sized), query: &str) -> (u16, Value) {
    let token = node.issue_token(TokenRole::Player, "demo", "joiner");
    join_with(node, "demo", query, &token).await
}

async fn join_with(
    node: &(impl NodeRef + ?Sized),
    table: &str,
    query: &str,
    token: &str,
) -> (u16, Value) {
    let r = node
        .client()
        .get(node.url(&format!("/api/v1/tables/{table}/join{query}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("join request");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn order(answer: &Value) -> Vec<String> {
    answer["nodes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|n| n["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_are_sent_to_the_least_loaded_node_of_their_region() {
    let cluster = Cluster::three_with(["eu", "us", "us"], TABLES, |_, _| {}).await;
    let (eu, busy_us, idle_us) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let players: Vec<Player> = futures_util::future::join_all(
        (0..4).map(|i| async move { Player::ws(busy_us, &format!("p{i}"), None).await }),
    )
    .await;
    for p in &players {
        p.wait_for("welcome", |m| m["type"] == "welcome").await;
    }
    // Node a learns of b's players from b's next heartbeat. (Asked through the node list:
    // each join answer counts a player sent to the node it names.)
    let operator = eu.issue_token(TokenRole::Operator, "*", "ops");
    wait_until(
        Duration::from_secs(10),
        "node a sees node b's four players",
        async || {
            let r = eu
                .client()
                .get(eu.url("/api/v1/cluster/nodes"))
                .bearer_auth(&operator)
                .send()
                .await
                .expect("node list");
            r.json::<Value>().await.unwrap_or(Value::Null)
        },
        |listing| {
            listing["nodes"]
                .as_array()
                .and_then(|n| n.iter().find(|n| n["id"] == THREE_IDS[1]))
                .is_some_and(|b| b["load"]["players"].as_u64() >= Some(4))
        },
    )
    .await;
    let (status, answer) = join(eu, "?region=us").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["node"], THREE_IDS[2], "the idle us node: {answer}");
    assert_eq!(answer["url"].as_str(), Some(idle_us.base_url().as_str()));
    assert_eq!(answer["in_region"], true);
    assert_eq!(answer["self"], false);
    assert_eq!(order(&answer), ["c", "b", "a"], "{answer}");

    // No region: the asked node's own (eu), which is itself.
    let (status, answer) = join(eu, "").await;
    assert_eq!(status, 200);
    assert_eq!(answer["node"], "a", "{answer}");
    assert_eq!(answer["self"], true);
    assert_eq!(answer["region"], "eu");
    // A node the client just lost is left out.
    let (_, answer) = join(busy_us, "?region=us&exclude=c").await;
    assert_eq!(order(&answer), ["b", "a"], "{answer}");
    // A region with no node: the least-loaded anywhere, so not the busy node.
    let (_, answer) = join(idle_us, "?region=ap").await;
    assert_eq!(answer["in_region"], false);
    assert_ne!(answer["node"], "b", "{answer}");
    assert_eq!(order(&answer).last().map(String::as_str), Some("b"));

    // Refused: each with its status and a message that says why.
    let (status, body) = join(eu, "?exclude=no/such").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = join(eu, "?exclude=a,b,c").await;
    assert_eq!(status, 503, "every node excluded: {body}");
    let (status, _) = join_with(eu, "demo", "", "not-a-token").await;
    assert_eq!(status, 401);
    let other_table = eu.issue_token(TokenRole::Player, "other", "joiner");
    let (status, _) = join_with(eu, "demo", "", &other_table).await;
    assert_eq!(status, 403);
    let everywhere = eu.issue_token(TokenRole::Operator, "*", "ops");
    let (status, _) = join_with(eu, "nope", "", &everywhere).await;
    assert_eq!(status, 404);
    for p in players {
        p.close().await;
    }
}

#[tokio::test]
async fn a_node_alone_sends_players_to_itself() {
    let cluster = Cluster::single(TABLES).await;
    let (status, answer) = join(cluster.node(0), "?region=anywhere").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["node"], "a");
    assert_eq!(answer["self"], true);
    assert_eq!(order(&answer), ["a"]);
}
