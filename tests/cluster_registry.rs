//! The cluster over a real redis-server: nodes see each other through heartbeats and a silent
//! one is removed; a node with other token keys is refused; one owner per table with fences
//! that only increase; and a Redis outage (even a restart nobody saw fail) holds claims back
//! until the owners have reasserted their leases.

mod common;

use common::redis::RedisServer;
use common::wait_until;
use redis::AsyncCommands;
use std::time::{Duration, Instant};
use tablecast::cluster::{
    ClusterError, Fence, NodeInfo, NodeLoad, NodeRegistry, NodeState, RedisCluster, Renewal,
    TableOwnership, keys,
};
use tablecast::ids::{NodeId, TableId};

const NODE_TIMEOUT: Duration = Duration::from_secs(1);
const LEASE: Duration = Duration::from_millis(500);
/// An outage must be an error within this long, never a hang.
const FAIL_FAST: Duration = Duration::from_secs(2);

fn id(name: &str) -> NodeId {
    NodeId::parse(name).unwrap()
}

fn table(name: &str) -> TableId {
    TableId::parse(name).unwrap()
}

fn info(name: &str) -> NodeInfo {
    NodeInfo {
        id: id(name),
        region: format!("region-{name}"),
        public_url: format!("http://{name}.test:8443"),
        state: NodeState::Serving,
        load: NodeLoad {
            players: 7,
            cpu: 0.25,
            bitrate_bps: 1_500_000,
        },
        tables: vec![table(&format!("table-{name}"))],
        heartbeat_ms: 0,
        relays: Default::default(),
        unreachable_origins: Default::default(),
    }
}

/// A node of the cluster, once Redis has been up for longer than the claim embargo (two
/// leases, counted from a second before Redis's whole-second uptime): a node that first sees a
/// younger Redis waits out the rest of it (see
/// `a_node_started_just_after_redis_waits_out_the_embargo`).
async fn connect(redis: &RedisServer) -> RedisCluster {
    let mut con = raw(redis).await;
    wait_until(
        Duration::from_secs(10),
        "redis-server has been up for two leases and a second",
        async || {
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut con)
                .await
                .unwrap_or_default();
            info.lines()
                .find_map(|l| l.strip_prefix("uptime_in_seconds:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        },
        |&up| Duration::from_secs(up) >= LEASE * 2 + Duration::from_secs(1),
    )
    .await;
    connect_now(redis).await
}

async fn connect_now(redis: &RedisServer) -> RedisCluster {
    RedisCluster::connect(&redis.url(), NODE_TIMEOUT, LEASE)
        .await
        .expect("connects to the test redis-server")
}

/// A node that starts within two leases of Redis's start cannot tell a fresh Redis from one
/// that restarted and lost the leases its owners are about to reassert: it claims nothing
/// until two leases after Redis started.
#[tokio::test]
async fn a_node_started_just_after_redis_waits_out_the_embargo() {
    // A longer lease than the other tests', so that a slow machine still connects well inside
    // the embargo: Redis's whole-second uptime makes it count from up to a second earlier.
    let lease = Duration::from_secs(1);
    let redis = RedisServer::start();
    let started = Instant::now();
    let node = RedisCluster::connect(&redis.url(), NODE_TIMEOUT, lease)
        .await
        .expect("connects to the test redis-server");
    let (me, t) = (id("early"), table("early-table"));
    assert_eq!(node.claim(&t, &me).await.unwrap(), None, "no claim at once");
    let fence = wait_until(
        Duration::from_secs(10),
        "the claim goes through",
        async || node.claim(&t, &me).await.unwrap(),
        Option::is_some,
    )
    .await;
    assert!(fence.is_some());
    // The embargo ends two leases after Redis started at the earliest.
    assert!(
        started.elapsed() >= lease,
        "claimed {:?} after Redis started",
        started.elapsed()
    );
}

/// A plain connection, to look at the keys themselves.
async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn nodes_see_each_other_and_a_silent_one_is_removed() {
    let redis = RedisServer::start();
    let (a, b, c) = (
        connect(&redis).await,
        connect(&redis).await,
        connect(&redis).await,
    );
    for (cluster, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        cluster.join(&info(name), "fp").await.unwrap();
        cluster.heartbeat(&info(name)).await.unwrap();
    }

    let nodes = b.nodes().await.unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    for node in &nodes {
        let sent = info(node.id.as_str());
        assert!(node.heartbeat_ms > 1_600_000_000_000, "server ms: {node:?}");
        assert_eq!(
            NodeInfo {
                heartbeat_ms: 0,
                relays: Default::default(),
                unreachable_origins: Default::default(),
                ..node.clone()
            },
            sent
        );
    }

    // c stops; a and b go on. After the node timeout a heartbeat removes c, entry included.
    let mut conn = raw(&redis).await;
    let gone = wait_until(
        NODE_TIMEOUT * 4,
        "a heartbeat removed the silent node c",
        async || {
            a.heartbeat(&info("a")).await.unwrap();
            b.heartbeat(&info("b")).await.unwrap();
            let score: Option<f64> = conn.zscore(keys::nodes(), "c").await.unwrap();
            let entry: bool = conn.exists(keys::node(&id("c"))).await.unwrap();
            (score, entry)
        },
        |seen| *seen == (None, false),
    )
    .await;
    assert_eq!(gone, (None, false));
    let names: Vec<String> = a
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id.to_string())
        .collect();
    assert_eq!(names, ["a", "b"]);

    // A clean stop removes the entry at once.
    b.leave(&id("b")).await.unwrap();
    let names: Vec<String> = a
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id.to_string())
        .collect();
    assert_eq!(names, ["a"]);
}

#[tokio::test]
async fn a_node_with_other_token_keys_or_a_taken_id_is_refused() {
    let redis = RedisServer::start();
    let (a, b) = (connect(&redis).await, connect(&redis).await);
    a.join(&info("a"), "fingerprint-one").await.unwrap();

    let error = b.join(&info("b"), "fingerprint-two").await.unwrap_err();
    assert!(
        matches!(&error, ClusterError::KeysDiffer { ours, theirs }
            if ours == "fingerprint-two" && theirs == "fingerprint-one"),
        "{error:?}"
    );
    let message = error.to_string();
    for part in ["fingerprint-one", "fingerprint-two", "[auth] secret"] {
        assert!(message.contains(part), "{message}");
    }

    // The same id at another address while a is live: refused; at a's own address (a restart
    // of a): fine.
    let mut impostor = info("a");
    impostor.public_url = "http://elsewhere.test:8443".into();
    let error = b.join(&impostor, "fingerprint-one").await.unwrap_err();
    assert!(
        matches!(&error, ClusterError::DuplicateNode(n) if n.as_str() == "a"),
        "{error:?}"
    );
    assert!(error.to_string().contains("[node] id"), "{error}");
    b.join(&info("a"), "fingerprint-one").await.unwrap();
}

#[tokio::test]
async fn one_owner_per_table_and_fences_only_increase() {
    let redis = RedisServer::start();
    let clusters = [
        connect(&redis).await,
        connect(&redis).await,
        connect(&redis).await,
    ];
    let ids = [id("a"), id("b"), id("c")];
    let t = table("blackjack-1");

    let (ra, rb, rc) = tokio::join!(
        clusters[0].claim(&t, &ids[0]),
        clusters[1].claim(&t, &ids[1]),
        clusters[2].claim(&t, &ids[2]),
    );
    let claims = [ra.unwrap(), rb.unwrap(), rc.unwrap()];
    let winners: Vec<usize> = (0..3).filter(|&i| claims[i].is_some()).collect();
    assert_eq!(winners.len(), 1, "exactly one claimer wins: {claims:?}");
    let first = winners[0];
    let first_fence = claims[first].unwrap();
    let owner = clusters[0].owner(&t).await.unwrap().unwrap();
    assert_eq!((&owner.node, owner.fence), (&ids[first], first_fence));
    assert_eq!(
        clusters[first]
            .renew(&t, &ids[first], first_fence)
            .await
            .unwrap(),
        Renewal::Held
    );

    // The owner stops renewing; once the lease lapses another node claims: a higher fence.
    let second = (first + 1) % 3;
    let second_fence = wait_until(
        LEASE * 4,
        "another node claims after the lease lapsed",
        async || clusters[second].claim(&t, &ids[second]).await.unwrap(),
        Option::is_some,
    )
    .await
    .unwrap();
    assert!(second_fence > first_fence, "{second_fence} > {first_fence}");
    assert_eq!(
        clusters[first]
            .renew(&t, &ids[first], first_fence)
            .await
            .unwrap(),
        Renewal::Lost,
        "the replaced owner must stop"
    );

    // The new owner misses its renewals; nobody claims meanwhile: it reasserts, same fence.
    wait_until(
        LEASE * 4,
        "the lease lapsed",
        async || clusters[0].owner(&t).await.unwrap(),
        Option::is_none,
    )
    .await;
    assert_eq!(
        clusters[second]
            .renew(&t, &ids[second], second_fence)
            .await
            .unwrap(),
        Renewal::Reasserted
    );
    let owner = clusters[0].owner(&t).await.unwrap().unwrap();
    assert_eq!((&owner.node, owner.fence), (&ids[second], second_fence));

    // Releasing with a stale fence does nothing; the owner's release frees the table at once.
    assert_eq!(
        clusters[second]
            .renew(&t, &ids[second], second_fence)
            .await
            .unwrap(),
        Renewal::Held
    );
    clusters[first]
        .release(&t, &ids[first], first_fence)
        .await
        .unwrap();
    assert!(clusters[0].owner(&t).await.unwrap().is_some());
    clusters[second]
        .release(&t, &ids[second], second_fence)
        .await
        .unwrap();
    let third = (second + 1) % 3;
    let third_fence = clusters[third].claim(&t, &ids[third]).await.unwrap();
    assert!(third_fence > Some(second_fence), "{third_fence:?}");
}

/// Runs `call`, which must fail as `Unreachable` quickly: an outage is an error, not a hang.
async fn fails_fast<T: std::fmt::Debug>(
    what: &str,
    call: impl Future<Output = Result<T, ClusterError>>,
) {
    let started = Instant::now();
    let result = call.await;
    assert!(
        started.elapsed() < FAIL_FAST,
        "{what} took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(result, Err(ClusterError::Unreachable(_))),
        "{what}: {result:?}"
    );
}

#[tokio::test]
async fn after_redis_lost_everything_owners_reassert_before_anyone_claims() {
    let mut redis = RedisServer::start_with(false);
    let (a, b) = (connect(&redis).await, connect(&redis).await);
    let (me, other) = (id("a"), id("b"));
    let (t, free) = (table("roulette-1"), table("roulette-2"));
    // Two claims, so that the fence a holds is 2: the counter must come back to at least that.
    let f1 = a.claim(&t, &me).await.unwrap().unwrap();
    a.release(&t, &me, f1).await.unwrap();
    let fence = a.claim(&t, &me).await.unwrap().unwrap();
    assert_eq!(fence, Fence(2));

    redis.kill();
    fails_fast("renew", a.renew(&t, &me, fence)).await;
    fails_fast("claim", b.claim(&free, &other)).await;
    fails_fast("heartbeat", b.heartbeat(&info("b"))).await;
    fails_fast("nodes", b.nodes()).await;

    redis.restart();
    let renewal = wait_until(
        FAIL_FAST,
        "the owner's renew answers",
        async || a.renew(&t, &me, fence).await,
        Result::is_ok,
    )
    .await
    .unwrap();
    assert_eq!(renewal, Renewal::Reasserted);
    let counter: Option<u64> = raw(&redis).await.get(keys::fence(&t)).await.unwrap();
    assert!(counter >= Some(fence.0), "fence counter {counter:?}");

    // b saw Redis fail: no claims during the embargo, not even of a table nobody holds.
    assert_eq!(b.claim(&free, &other).await.unwrap(), None);
    assert_eq!(b.claim(&t, &other).await.unwrap(), None);

    // After the embargo a free table can be claimed; once a stops renewing, its table too,
    // with a fence above the one a held.
    wait_until(
        LEASE * 6,
        "the embargo ended",
        async || b.claim(&free, &other).await.unwrap(),
        Option::is_some,
    )
    .await;
    let next = wait_until(
        LEASE * 6,
        "b claims a's table after a stopped renewing",
        async || b.claim(&t, &other).await.unwrap(),
        Option::is_some,
    )
    .await
    .unwrap();
    assert!(next > fence, "{next} > {fence}");
    assert_eq!(a.renew(&t, &me, fence).await.unwrap(), Renewal::Lost);
}

#[tokio::test]
async fn a_restart_nobody_saw_fail_still_holds_claims_back() {
    let mut redis = RedisServer::start_with(false);
    let b = connect(&redis).await;
    let other = id("b");
    b.heartbeat(&info("b")).await.unwrap();

    // Between two heartbeats Redis restarts empty; b runs no command meanwhile.
    redis.kill();
    redis.restart();
    b.heartbeat(&info("b"))
        .await
        .expect("the heartbeat after a restart succeeds (the broken connection is replaced)");

    let t = table("baccarat-1");
    assert_eq!(
        b.claim(&t, &other).await.unwrap(),
        None,
        "the new run_id starts the embargo"
    );
    let started = Instant::now();
    wait_until(
        LEASE * 6,
        "the embargo ended",
        async || b.claim(&t, &other).await.unwrap(),
        Option::is_some,
    )
    .await;
    assert!(started.elapsed() < LEASE * 3, "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_redis_that_stops_answering_is_an_error_not_a_hang() {
    let redis = RedisServer::start();
    let a = connect(&redis).await;
    let (me, t) = (id("a"), table("poker-1"));
    let fence = a.claim(&t, &me).await.unwrap().unwrap();
    let pid = libc::pid_t::try_from(redis.pid().unwrap()).unwrap();

    // SIGSTOP: the socket stays open, nothing answers.
    // SAFETY: signals a child process this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    fails_fast("renew", a.renew(&t, &me, fence)).await;
    fails_fast("heartbeat", a.heartbeat(&info("a"))).await;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);

    let renewal = wait_until(
        FAIL_FAST,
        "renew answers again",
        async || a.renew(&t, &me, fence).await,
        Result::is_ok,
    )
    .await;
    assert!(
        matches!(renewal, Ok(Renewal::Held | Renewal::Reasserted)),
        "{renewal:?}"
    );
}
