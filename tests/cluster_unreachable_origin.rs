//! An edge that cannot reach a table's origin says so, and players are sent elsewhere. Three
//! node processes on a real redis-server; the dealer publishes on the table's owner (the
//! origin). An nftables rule drops the UDP of one edge's pull (its own loopback address, `[media]
//! relay_bind_ip`) to the origin's media port; a player on that edge makes it pull. That edge's
//! `/readyz` then says `degraded`, naming the table and the origin, and `join` asked of any node
//! names it last for the table; once the rule goes, the mark clears, `/readyz` is `ready` again
//! and `join` sends players there again.

mod common;

use common::cluster::{Cluster, THREE_IDS};
use common::nft::NftTable;
use common::round::owner;
use common::{NodeRef, media_only, wait_until};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tablecast::auth::TokenRole;

/// Each node in its own region, so that `join?region=` of a node's region names that node first
/// unless something says otherwise.
const REGIONS: [&str; 3] = ["ra", "rb", "rc"];

/// The loopback address node `i`'s pulls bind to: only they use it, so a rule on it cuts them
/// and nothing else.
fn relay_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 11 + i as u8)
}

async fn readyz(node: &common::process::NodeProcess) -> (u16, Value) {
    let Ok(r) = node.client().get(node.url("/readyz")).send().await else {
        return (0, Value::Null);
    };
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `GET /api/v1/tables/demo/join?region={region}` asked of `node`: the answer.
async fn join(node: &common::process::NodeProcess, region: &str) -> Value {
    let token = node.issue_token(TokenRole::Player, "demo", "joiner");
    let Ok(r) = node
        .client()
        .get(node.url(&format!("/api/v1/tables/demo/join?region={region}")))
        .bearer_auth(token)
        .send()
        .await
    else {
        return Value::Null;
    };
    r.json().await.unwrap_or(Value::Null)
}

/// The node ids of a join answer, in its order, each with whether it reaches the origin.
fn order(answer: &Value) -> Vec<(String, bool)> {
    answer["nodes"]
        .as_array()
        .map(|n| {
            n.iter()
                .map(|n| {
                    (
                        n["id"].as_str().unwrap_or("?").to_owned(),
                        n["reaches_origin"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn names(body: &Value, table: &str, origin: &str) -> bool {
    body["unreachable_origins"].as_array().is_some_and(|u| {
        u.iter()
            .any(|u| u["table"] == table && u["origin"] == origin)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_cannot_reach_the_origin_says_so_and_join_sends_players_elsewhere() {
    let firewall = NftTable::create()
        .unwrap_or_else(|e| panic!("this test cuts a path between nodes with nftables: {e}"));
    let cluster = Cluster::three_with(REGIONS, "", |i, config| {
        let media = config
            .get_mut("media")
            .and_then(|m| m.as_table_mut())
            .expect("the test config has [media]");
        media.insert(
            "relay_bind_ip".into(),
            toml::Value::String(relay_ip(i).to_string()),
        );
    })
    .await;
    let origin = owner(&cluster, 0, None).await;
    let (edge, other) = ((origin + 1) % 3, (origin + 2) % 3);
    let (origin_id, edge_id) = (THREE_IDS[origin], THREE_IDS[edge]);
    let epoch = Instant::now();
    let dealer = common::dealer(cluster.node(origin), epoch).await;

    // Join sends players of the edge's region to the edge while it reaches the origin.
    for node in cluster.nodes() {
        let answer = join(node, REGIONS[edge]).await;
        assert_eq!(answer["node"], edge_id, "asked of {}: {answer}", node.id);
    }

    // The edge's pull cannot reach the origin's media port; the other edge's can.
    firewall
        .add(&format!(
            "ip saddr {} ip daddr 127.0.0.1 udp dport {} counter drop",
            relay_ip(edge),
            cluster.node(origin).media_port()
        ))
        .unwrap_or_else(|e| panic!("the rule is added: {e}"));
    let cut_player = common::player(cluster.node(edge), media_only(), epoch).await;
    let asked = Instant::now();
    let other_player = common::player(cluster.node(other), media_only(), epoch).await;

    let (status, body) = wait_until(
        Duration::from_secs(15),
        "the cut edge's /readyz says degraded, naming the table and its origin",
        async || readyz(cluster.node(edge)).await,
        |(_, b)| b["status"] == "degraded" && names(b, "demo", origin_id),
    )
    .await;
    let marked_after = asked.elapsed();
    println!(
        "/readyz of the cut edge said degraded {} ms after its player asked for the video: {body}",
        marked_after.as_millis()
    );
    assert_eq!(
        status, 200,
        "the node still serves other tables and control"
    );
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("demo") && reason.contains(&format!("origin node {origin_id}")),
        "the reason names the table and the origin: {reason}"
    );
    let mark = &body["unreachable_origins"][0];
    assert!(
        mark["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{mark}"
    );
    let since = mark["since_ms"].as_u64().unwrap_or(0);
    assert!(
        since > 0 && since <= tablecast::control::server_ms(),
        "since_ms is a time in the past: {mark}"
    );
    assert!(
        marked_after < Duration::from_secs(6),
        "marked within a few seconds, not after many retries: {marked_after:?}"
    );

    // The rule cut that pull alone: the other edge's player gets video and its node is ready.
    wait_until(
        Duration::from_secs(20),
        "the player on the other edge gets video",
        async || other_player.stats().video_packets,
        |&n| n > 100,
    )
    .await;
    assert_eq!(
        cut_player.stats().video_packets,
        0,
        "no video reaches the cut edge's player"
    );
    assert!(
        firewall.matched() > 0,
        "the rule dropped the pull's packets"
    );
    for i in [origin, other] {
        let (status, body) = readyz(cluster.node(i)).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("ready")),
            "node {} reaches the origin: {body}",
            THREE_IDS[i]
        );
    }

    // Every node learns it from the edge's heartbeat: join names the edge last, even to players
    // of its own region, and the node list shows the mark.
    for node in cluster.nodes() {
        let answer = wait_until(
            Duration::from_secs(10),
            &format!(
                "join asked of node {} names the cut edge last, as not reaching the origin",
                node.id
            ),
            async || join(node, REGIONS[edge]).await,
            |a| order(a).last() == Some(&(edge_id.to_owned(), false)),
        )
        .await;
        assert_ne!(answer["node"], edge_id, "{answer}");
        assert_eq!(order(&answer).len(), 3, "kept in the list, last: {answer}");
    }
    let ops = cluster
        .node(other)
        .issue_token(TokenRole::Operator, "*", "ops");
    let listing: Value = cluster
        .node(other)
        .client()
        .get(cluster.node(other).url("/api/v1/cluster/nodes"))
        .bearer_auth(&ops)
        .send()
        .await
        .expect("node list")
        .json()
        .await
        .expect("node list JSON");
    let listed = listing["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["id"] == edge_id))
        .cloned()
        .unwrap_or(Value::Null);
    assert!(
        names(&listed, "demo", origin_id),
        "the node list shows the edge's mark: {listed}"
    );

    // The path comes back: the mark clears, and players are sent there again.
    firewall
        .flush()
        .unwrap_or_else(|e| panic!("the rule is removed: {e}"));
    let restored = Instant::now();
    let (_, body) = wait_until(
        Duration::from_secs(20),
        "the edge's /readyz is ready again",
        async || readyz(cluster.node(edge)).await,
        |(s, b)| *s == 200 && b["status"] == "ready",
    )
    .await;
    println!(
        "/readyz of the edge was ready again {} ms after the path came back",
        restored.elapsed().as_millis()
    );
    assert!(body.get("unreachable_origins").is_none(), "{body}");
    wait_until(
        Duration::from_secs(20),
        "the edge's player gets video once the path is back",
        async || cut_player.stats().video_packets,
        |&n| n > 100,
    )
    .await;
    for node in cluster.nodes() {
        wait_until(
            Duration::from_secs(10),
            &format!(
                "join asked of node {} sends the edge's region to the edge again",
                node.id
            ),
            async || join(node, REGIONS[edge]).await,
            |a| a["node"] == edge_id && order(a).first() == Some(&(edge_id.to_owned(), true)),
        )
        .await;
    }
    drop(dealer);
}
