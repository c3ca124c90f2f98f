//! Three node processes on a real redis-server, and what happens to a round when one of them,
//! or Redis, fails: the owner SIGKILLed, the owner paused past its lease, Redis killed, the
//! owner drained. Every acknowledged bet stays, every player's seq stream has no gap and no
//! duplicate, and the Redis log audits.

mod common;

use common::NodeRef;
use common::cluster::{Cluster, THREE_IDS};
use common::round::*;
use common::wait_until;
use serde_json::json;
use std::time::{Duration, Instant};

/// The demo table, whose rounds the dealer opens, with a long betting window.
const TABLES: &str = r#"
[[tables]]
id = "demo"
betting_window_secs = 120
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_owner_loses_no_acknowledged_bet_and_no_seq() {
    let cluster = Cluster::three(TABLES).await;
    let o = owner(&cluster, 0, None).await;
    let other = (o + 1) % 3;
    let mut followers = three_players_per_node(&cluster).await;
    let round = open_round(&cluster, other, &followers).await;
    let mut acked = Acked::new();
    everyone_bets(&followers, &round, "a", &mut acked).await;

    let killed = Instant::now();
    cluster.node(o).kill();
    let new_owner = successor(&cluster, o).await;
    let took = killed.elapsed();
    // Within 3 s of the default timeouts (a 2 s lease, a claim looked at every 0.5 s).
    assert!(took < Duration::from_secs(3), "a new owner took {took:?}");

    // The players of the dead node reconnect elsewhere and resume; betting goes on everywhere.
    for f in followers.iter_mut().filter(|f| f.node == o) {
        f.move_to(&cluster, other).await;
    }
    everyone_bets(&followers, &round, "b", &mut acked).await;
    settle(&cluster, other, &followers, "player").await;
    assert_gapless(&followers);
    assert_settled(&followers, &acked);
    audit(&cluster).expect("the Redis log audits");
    eprintln!("failover: node {new_owner} owned the table {took:?} after SIGKILL of node {o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_outage_changes_nothing_players_notice() {
    let mut cluster = Cluster::three(TABLES).await;
    let o = owner(&cluster, 0, None).await;
    let followers = three_players_per_node(&cluster).await;
    // 15 s in the suite; TABLECAST_TEST_OUTAGE_SECS=60 for the long run of docs/cluster.md.
    let outage = std::env::var("TABLECAST_TEST_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(15), Duration::from_secs);
    cluster.redis_mut().expect("redis").kill();
    let down = Instant::now();
    let owner_node = cluster.node(o);
    wait_until(
        Duration::from_secs(10),
        "/readyz stays 200 and says degraded",
        async || {
            let r = owner_node
                .client()
                .get(owner_node.url("/readyz"))
                .send()
                .await
                .expect("readyz");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        },
        |(status, body)| *status == 200 && body.contains("degraded"),
    )
    .await;

    let round = open_round(&cluster, (o + 1) % 3, &followers).await;
    let mut acked = Acked::new();
    everyone_bets(&followers, &round, "o", &mut acked).await;
    // Bets go on through the outage, from every node.
    let mut n = 0;
    while down.elapsed() + Duration::from_secs(3) < outage {
        everyone_bets(&followers, &round, &format!("r{n}-"), &mut acked).await;
        n += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    dealer_until_done(&cluster, (o + 2) % 3, "close", None).await;
    if let Some(rest) = outage.checked_sub(down.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    for i in 0..3 {
        let snap = snapshot(cluster.node(i)).await;
        assert_eq!(
            snap["owner"], THREE_IDS[o],
            "no owner change while Redis is away"
        );
    }
    cluster.redis_mut().expect("redis").restart();
    dealer_until_done(&cluster, o, "result", Some(json!({"outcome": "banker"}))).await;
    for f in &followers {
        f.now.wait_for("round.settled", is("round.settled")).await;
    }
    assert_gapless(&followers);
    assert_settled(&followers, &acked);
    // What the owner wrote meanwhile reaches the Redis log, chain intact, and it is still the
    // owner everywhere.
    let last = followers[0].last_seq();
    let _ = wait_until(
        Duration::from_secs(15),
        "the Redis log holds every event and audits",
        async || audit(&cluster),
        |report| {
            report
                .as_ref()
                .is_ok_and(|r| r.contains(&format!("last seq {last}")))
        },
    )
    .await;
    for i in 0..3 {
        assert_eq!(
            owner(&cluster, i, None).await,
            o,
            "node {i} after Redis is back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_paused_past_its_lease_is_fenced_and_steps_down() {
    let cluster = Cluster::three(TABLES).await;
    let o = owner(&cluster, 0, None).await;
    let other = (o + 1) % 3;
    let mut followers = three_players_per_node(&cluster).await;
    let round = open_round(&cluster, other, &followers).await;
    cluster.node(o).stop();
    // A bet waits in the paused owner's socket while the table moves on without it.
    let paused = followers
        .iter()
        .position(|f| f.node == o)
        .expect("a player on the owner");
    followers[paused].now.send(
        json!({"type": "bet.place", "id": "late", "round": round, "spot": "tie", "amount": 100}),
    );
    let new_owner = owner(&cluster, other, Some(o)).await;
    let mut acked = Acked::new();
    let movers: Vec<usize> = (0..followers.len())
        .filter(|i| followers[*i].node != o)
        .collect();
    for i in movers {
        let f = &followers[i];
        let (id, spot, amount) = (format!("s{i}"), SPOTS[i % 3], 100 + i as u64);
        let answer = f.bet(&round, &id, spot, amount).await;
        assert_eq!(answer["type"], "bet.accepted", "{answer}");
        acked.insert(id, (spot.to_owned(), amount, f.user.clone()));
    }
    cluster.node(o).cont();
    // The old owner finds its lease gone: it steps down and follows the new owner.
    wait_until(
        Duration::from_secs(10),
        "the resumed node names the new owner",
        async || snapshot(cluster.node(o)).await,
        |s| s["owner"] == THREE_IDS[new_owner],
    )
    .await;
    for f in followers.iter_mut().filter(|f| f.node == o) {
        f.move_to(&cluster, new_owner).await;
    }
    if let Some(answer) = followers[paused]
        .all()
        .into_iter()
        .find(|m| m["id"] == "late")
        && answer["type"] == "bet.accepted"
    {
        let user = followers[paused].user.clone();
        acked.insert("late".into(), ("tie".into(), 100, user));
    }
    settle(&cluster, other, &followers, "tie").await;
    assert_gapless(&followers);
    assert_settled(&followers, &acked);
    audit(&cluster).expect("the Redis log audits: no duplicated or forked seq");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_owner_hands_the_table_over_and_its_players_resume_elsewhere() {
    let cluster = Cluster::three_with(["", "", ""], TABLES, |_, config| {
        let section = config
            .entry("cluster")
            .or_insert(toml::Value::Table(Default::default()));
        if let Some(t) = section.as_table_mut() {
            t.insert("drain_timeout_secs".into(), toml::Value::Integer(10));
        }
    })
    .await;
    let o = owner(&cluster, 0, None).await;
    let other = (o + 1) % 3;
    let mut followers = three_players_per_node(&cluster).await;
    let round = open_round(&cluster, other, &followers).await;
    let mut acked = Acked::new();
    everyone_bets(&followers, &round, "d", &mut acked).await;

    let operator = common::test_token(tablecast::auth::TokenRole::Operator, "*", "ops");
    let started = Instant::now();
    let ask = cluster.node(other);
    let r = ask
        .client()
        .post(ask.url(&format!("/api/v1/cluster/nodes/{}/drain", THREE_IDS[o])))
        .bearer_auth(&operator)
        .send()
        .await
        .expect("drain request");
    assert_eq!(
        r.status().as_u16(),
        202,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let status = cluster.node(o).wait_exit(Duration::from_secs(15)).await;
    let took = started.elapsed();
    assert!(status.success(), "a drained node exits cleanly: {status:?}");
    assert!(took < Duration::from_secs(10), "the drain took {took:?}");
    let new_owner = owner(&cluster, other, Some(o)).await;
    for f in followers.iter_mut().filter(|f| f.node == o) {
        let told = f
            .now
            .messages()
            .iter()
            .any(|m| m["type"] == "error" && m["code"] == "unavailable");
        assert!(told, "{} was told to move", f.user);
        f.move_to(&cluster, new_owner).await;
    }
    everyone_bets(&followers, &round, "e", &mut acked).await;
    settle(&cluster, other, &followers, "banker").await;
    assert_gapless(&followers);
    assert_settled(&followers, &acked);
    audit(&cluster).expect("the Redis log audits");
    eprintln!("drain: node {o} exited {took:?} after the request; node {new_owner} owns the table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_cut_off_from_redis_alone_acknowledges_nothing_the_new_owner_lacks() {
    let proxies = [
        common::proxy::CutProxy::start().await,
        common::proxy::CutProxy::start().await,
        common::proxy::CutProxy::start().await,
    ];
    let cluster = Cluster::three_with(["", "", ""], TABLES, |i, config| {
        // Each node reaches Redis through its own relay, which the test can cut.
        let section = config
            .get_mut("cluster")
            .and_then(|c| c.as_table_mut())
            .expect("[cluster]");
        let url = section["redis_url"].as_str().expect("redis_url").to_owned();
        let port: u16 = url
            .trim_end_matches("/0")
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the URL");
        proxies[i].set_upstream(port);
        section.insert(
            "redis_url".into(),
            toml::Value::String(format!("redis://127.0.0.1:{}/0", proxies[i].port)),
        );
    })
    .await;
    let o = owner(&cluster, 0, None).await;
    let other = (o + 1) % 3;
    let mut followers = three_players_per_node(&cluster).await;
    let round = open_round(&cluster, other, &followers).await;
    let mut acked = Acked::new();
    everyone_bets(&followers, &round, "a", &mut acked).await;

    proxies[o].cut();
    let cut = Instant::now();
    // A bet reaches the cut-off owner: it must not be acknowledged unless the log keeps it.
    let stranded = followers
        .iter()
        .position(|f| f.node == o)
        .expect("a player on the owner");
    followers[stranded].now.send(
        json!({"type": "bet.place", "id": "late", "round": round, "spot": "tie", "amount": 300}),
    );
    let new_owner = owner(&cluster, other, Some(o)).await;
    eprintln!(
        "partition: node {new_owner} owned the table {:?} after node {o} lost Redis",
        cut.elapsed()
    );
    let early = followers[stranded]
        .now
        .messages()
        .into_iter()
        .find(|m| m["id"] == "late" && m["type"] == "bet.accepted");
    for f in followers.iter_mut().filter(|f| f.node == o) {
        f.move_to(&cluster, new_owner).await;
    }
    // An acknowledged bet is never sent again (a client would not); one left unanswered is
    // sent again where the table is now. Either way it must be counted, once.
    if early.is_none() {
        let answer = followers[stranded].bet(&round, "late", "tie", 300).await;
        assert_eq!(answer["type"], "bet.accepted", "{answer}");
    }
    acked.insert(
        "late".into(),
        ("tie".into(), 300, followers[stranded].user.clone()),
    );
    everyone_bets(&followers, &round, "b", &mut acked).await;
    settle(&cluster, new_owner, &followers, "tie").await;
    assert_gapless(&followers);
    assert_settled(&followers, &acked);
    audit(&cluster).expect("the Redis log audits");
}
