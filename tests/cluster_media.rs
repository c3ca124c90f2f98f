//! Media in a cluster: the table's owner is its media origin. A node that does not own the table
//! answers a WHIP POST with `307` to the owner, and the client follows it with its token; a
//! player's WHEP POST is served by the node it reached, which pulls the video from the origin
//! (the cascade, tested in `cluster_cascade.rs`).

mod common;

use common::cluster::Cluster;
use common::{NodeRef, wait_until};
use std::time::{Duration, Instant};
use tablecast::auth::TokenRole;
use tablecast::client::{PublishOptions, Publisher, Subscriber, Target};

/// The index in `cluster` of the node that owns the demo table: the node whose entry in
/// `GET /api/v1/cluster/nodes` lists it among its tables.
async fn owner_of_demo(cluster: &Cluster) -> usize {
    let first = cluster.node(0);
    let token = first.issue_token(TokenRole::Operator, "*", "ops");
    let owner = wait_until(
        Duration::from_secs(20),
        "a node lists the demo table among its tables in GET /api/v1/cluster/nodes",
        async || {
            let body: serde_json::Value = first
                .client()
                .get(first.url("/api/v1/cluster/nodes"))
                .bearer_auth(&token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            body["nodes"].as_array()?.iter().find_map(|n| {
                let tables = n["tables"].as_array()?;
                tables
                    .iter()
                    .any(|t| t == "demo")
                    .then(|| n["id"].as_str().map(str::to_owned))?
            })
        },
        Option::is_some,
    )
    .await
    .expect("wait_until returned an owner");
    cluster
        .nodes()
        .iter()
        .position(|n| n.id == owner)
        .unwrap_or_else(|| panic!("the owner {owner:?} is one of the three nodes"))
}

/// A client of `node` for `table` demo, as `role`.
fn demo_target(node: &impl NodeRef, role: TokenRole, user: &str) -> Target {
    Target {
        base_url: node.base_url(),
        table: "demo".into(),
        camera: None,
        token: node.issue_token(role, "demo", user),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_post_to_a_node_that_does_not_own_the_table_is_redirected_to_the_owner() {
    let cluster = Cluster::three("").await;
    let owner = owner_of_demo(&cluster).await;
    let other = cluster.node((owner + 1) % 3);
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client");

    // Until the node has seen the owner (its next tick), it answers 503 with Retry-After.
    let resp = wait_until(
        Duration::from_secs(10),
        "the non-owner answers a WHIP POST with something other than 503",
        async || {
            raw.post(other.url("/whip/demo?camera=main"))
                .header("Content-Type", "application/sdp")
                .bearer_auth(other.issue_token(TokenRole::Dealer, "demo", "d-raw"))
                .body(common::offer("sendonly"))
                .send()
                .await
                .expect("the non-owner answers")
        },
        |r| r.status().as_u16() != 503,
    )
    .await;
    assert_eq!(
        resp.status().as_u16(),
        307,
        "a non-owner redirects a WHIP POST"
    );
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("the 307 has a Location");
    assert_eq!(
        location,
        format!("{}/whip/demo?camera=main", cluster.node(owner).base_url()),
        "Location is the owner's public URL, with the query kept"
    );

    // A player is served where it asked.
    let resp = raw
        .post(other.url("/whep/demo"))
        .header("Content-Type", "application/sdp")
        .bearer_auth(other.issue_token(TokenRole::Player, "demo", "p-raw"))
        .body(common::offer("recvonly"))
        .send()
        .await
        .expect("the non-owner answers");
    assert_eq!(resp.status().as_u16(), 201, "a non-owner serves a player");

    // Relays between nodes are for node credentials only.
    for (token, who) in [
        (
            other.issue_token(TokenRole::Player, "demo", "p-raw"),
            "a player",
        ),
        (
            other.issue_token(TokenRole::Operator, "*", "ops"),
            "an operator",
        ),
    ] {
        let resp = raw
            .post(cluster.node(owner).url("/cluster/v1/relay/demo"))
            .header("Content-Type", "application/sdp")
            .bearer_auth(token)
            .body(common::offer("recvonly"))
            .send()
            .await
            .expect("the owner answers");
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, 403, "{who} cannot open a relay: {body}");
    }

    // The owner itself takes the offer.
    let resp = raw
        .post(cluster.node(owner).url("/whep/demo"))
        .header("Content-Type", "application/sdp")
        .bearer_auth(other.issue_token(TokenRole::Player, "demo", "p-raw"))
        .body(common::offer("recvonly"))
        .send()
        .await
        .expect("the owner answers");
    assert_eq!(resp.status().as_u16(), 201, "the owner serves the table");
    let path = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a Location")
        .to_owned();
    let owner_id = cluster.node(owner).id.as_str();
    assert!(
        path.ends_with(&format!("-{owner_id}")),
        "the session id names its node {owner_id}: {path}"
    );

    // A DELETE that reaches another node (a load balancer's choice) is sent on to the node
    // that holds the session, with the same path.
    let token = other.issue_token(TokenRole::Player, "demo", "p-raw");
    let resp = raw
        .delete(other.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .expect("the non-owner answers the DELETE");
    assert_eq!(resp.status().as_u16(), 307);
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        location,
        format!("{}{path}", cluster.node(owner).base_url())
    );
    let resp = raw
        .delete(&location)
        .bearer_auth(&token)
        .send()
        .await
        .expect("the owner answers the DELETE");
    assert_eq!(resp.status().as_u16(), 200, "the session is gone");
    // A session of a node nobody knows is not found, wherever it is asked for.
    let unknown = path.replace(&format!("-{owner_id}"), "-nosuchnode");
    let resp = raw
        .delete(other.url(&unknown))
        .bearer_auth(&token)
        .send()
        .await
        .expect("the node answers");
    assert_eq!(resp.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dealer_through_another_node_reaches_a_player_on_a_third() {
    let cluster = Cluster::three("").await;
    let owner = owner_of_demo(&cluster).await;
    let owner_url = cluster.node(owner).base_url();
    let dealer_node = cluster.node((owner + 1) % 3);
    let player_node = cluster.node((owner + 2) % 3);
    let epoch = Instant::now();

    let dealer = Publisher::connect(
        demo_target(dealer_node, TokenRole::Dealer, "dealer"),
        PublishOptions::default(),
        epoch,
    )
    .await
    .unwrap_or_else(|e| panic!("the dealer publishes through a non-owner: {e}"));
    assert!(
        dealer
            .resource
            .location
            .starts_with(&format!("{owner_url}/whip/demo/")),
        "the dealer's session is on the owner {owner_url}: {}",
        dealer.resource.location
    );

    let player = Subscriber::connect(
        demo_target(player_node, TokenRole::Player, "player"),
        common::media_only(),
        epoch,
    )
    .await
    .unwrap_or_else(|e| panic!("the player joins through a non-owner: {e}"));
    let player_url = player_node.base_url();
    assert!(
        player
            .resource
            .location
            .starts_with(&format!("{player_url}/whep/demo/")),
        "the player's session is on the node it asked, {player_url}: {}",
        player.resource.location
    );

    wait_until(
        Duration::from_secs(15),
        "the player gets the dealer's video and audio; (video, audio) packets",
        async || {
            let s = player.stats();
            (s.video_packets, s.audio_packets)
        },
        |&(video, audio)| video > 50 && audio > 20,
    )
    .await;

    // DELETE goes to the node that holds each session, with the token kept.
    assert_eq!(player.close().await.expect("player DELETE"), 200);
    assert_eq!(dealer.close().await.expect("dealer DELETE"), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_owner_dies_a_dealer_through_a_survivor_publishes_on_the_new_owner() {
    let cluster = Cluster::three("").await;
    let first_owner = owner_of_demo(&cluster).await;
    let survivor = cluster.node((first_owner + 1) % 3);
    cluster.node(first_owner).kill();

    // At once: the survivor still names the dead owner (307), then no owner (503), then the
    // new one. The client waits all of that out.
    let dealer = Publisher::connect(
        demo_target(survivor, TokenRole::Dealer, "dealer"),
        PublishOptions::default(),
        Instant::now(),
    )
    .await
    .unwrap_or_else(|e| panic!("the dealer publishes once the table has a new owner: {e}"));
    let dead = cluster.node(first_owner).base_url();
    assert!(
        !dealer.resource.location.starts_with(&dead),
        "the dealer's session is not on the dead owner {dead}: {}",
        dealer.resource.location
    );
    assert_eq!(dealer.close().await.expect("dealer DELETE"), 200);
}
