//! A table's region: three node processes on a real redis-server, in regions `eu`, `us` and
//! `us`, and which of them owns a `us` table as nodes start and die.

mod common;

use common::cluster::{Cluster, THREE_IDS};
use common::round::*;
use common::wait_until;
use std::time::{Duration, Instant};

/// A table whose studio is in `us` is owned by a `us` node, even though the `eu` node started
/// first and found no other node; when that owner dies the other `us` node takes the table, and
/// only when no `us` node is left does the `eu` node take it. A player on the `eu` node sees
/// the round go on through both failovers with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_stays_in_its_region_while_a_node_there_lives() {
    const US_TABLE: &str = r#"
[[tables]]
id = "demo"
region = "us"
betting_window_secs = 120
"#;
    let cluster = Cluster::three_after_first(["eu", "us", "us"], US_TABLE, async |eu| {
        // The eu node has read the registry, and found itself alone, before the others start.
        wait_until(
            Duration::from_secs(10),
            "the eu node lists itself",
            async || listed_nodes(eu).await,
            |ids| ids.iter().any(|id| id == THREE_IDS[0]),
        )
        .await;
    })
    .await;
    let first = owner(&cluster, 0, None).await;
    assert_ne!(first, 0, "a us node owns the us table, not the eu node");
    let followers = vec![Follower::join(&cluster, 0, "eu-player".into()).await];
    let round = open_round(&cluster, 0, &followers).await;
    let mut acked = Acked::new();
    everyone_bets(&followers, &round, "a", &mut acked).await;

    cluster.node(first).kill();
    let second = successor(&cluster, first).await;
    assert_eq!(
        second,
        3 - first,
        "the other us node takes the table while it lives"
    );
    everyone_bets(&followers, &round, "b", &mut acked).await;

    let killed = Instant::now();
    cluster.node(second).kill();
    let last = successor(&cluster, second).await;
    assert_eq!(last, 0, "with no us node left, the eu node takes the table");
    eprintln!(
        "region: the eu node took the table {:?} after the last us node died",
        killed.elapsed()
    );
    everyone_bets(&followers, &round, "c", &mut acked).await;
    settle(&cluster, 0, &followers, "banker").await;
    assert_gapless(&followers);
    assert_settled(&followers, &acked);
    audit(&cluster).expect("the Redis log audits");
}
