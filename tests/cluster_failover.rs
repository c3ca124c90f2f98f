//! Three node processes on a real redis-server, and what happens to a round when one of them,
//! or Redis, fails: the owner SIGKILLed, the owner paused past its lease, Redis killed, the
//! owner drained. Every acknowledged bet stays, every player's seq stream has no gap and no
//! duplicate, and the Redis log audits.

mod common;

use common::NodeRef;
use common::cluster::{Cluster, THREE_IDS};
use common::control::{Player, dealer, seqs, token_for};
use common::wait_until;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The demo table, whose rounds the dealer opens, with a long betting window.
const TABLES: &str = r#"
[[tables]]
id = "demo"
betting_window_secs = 120
"#;

const SPOTS: [&str; 3] = ["player", "banker", "tie"];

/// Acknowledged bets: id → (spot, amount, user).
type Acked = BTreeMap<String, (String, u64, String)>;

fn is(ty: &'static str) -> impl Fn(&Value) -> bool {
    move |m| m["type"] == ty
}

/// `GET /api/v1/tables/demo`, or `null` while the node cannot say (the table is moving).
async fn snapshot(node: &(impl NodeRef + ?Sized)) -> Value {
    let token = token_for(node, tablecast::auth::TokenRole::Player, "observer");
    let answer = node
        .client()
        .get(node.url("/api/v1/tables/demo"))
        .bearer_auth(token)
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
        Ok(r) => json!({"status": r.status().as_u16(), "body": r.text().await.unwrap_or_default()}),
        Err(e) => json!({"error": e.to_string()}),
    }
}

fn index_of(id: &str) -> usize {
    THREE_IDS
        .iter()
        .position(|n| *n == id)
        .unwrap_or_else(|| panic!("owner {id} is one of the nodes"))
}

/// The index of the node that owns the demo table, asked of node `ask`, once it is not `not`.
async fn owner(cluster: &Cluster, ask: usize, not: Option<usize>) -> usize {
    let node = cluster.node(ask);
    let snap = wait_until(
        Duration::from_secs(15),
        "the table has an owner",
        async || snapshot(node).await,
        |s| s["owner"].is_string() && not.is_none_or(|n| s["owner"] != THREE_IDS[n]),
    )
    .await;
    index_of(snap["owner"].as_str().unwrap_or_default())
}

/// The node that took the demo table after node `dead` stopped, as the first of the survivors
/// to say it owns the table: a node names itself the moment it takes a lease, while a node
/// asked about another learns of it on its next tick.
async fn successor(cluster: &Cluster, dead: usize) -> usize {
    let survivors: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
    let claimed = wait_until(
        Duration::from_secs(15),
        "a surviving node says it owns the table",
        async || {
            for &i in &survivors {
                let s = snapshot(cluster.node(i)).await;
                if s["owner"] == THREE_IDS[i] {
                    return Some(i);
                }
            }
            None
        },
        Option::is_some,
    )
    .await;
    claimed.expect("polled until some")
}

/// One player's whole stream, across the connections it had to open.
struct Follower {
    user: String,
    node: usize,
    earlier: Vec<Value>,
    now: Player,
}

impl Follower {
    async fn join(cluster: &Cluster, node: usize, user: String) -> Follower {
        let now = Player::ws(cluster.node(node), &user, None).await;
        now.wait_for("welcome", is("welcome")).await;
        Follower {
            user,
            node,
            earlier: Vec::new(),
            now,
        }
    }

    fn all(&self) -> Vec<Value> {
        let mut all = self.earlier.clone();
        all.extend(self.now.messages());
        all
    }

    fn last_seq(&self) -> u64 {
        seqs(&self.all()).last().copied().unwrap_or(0)
    }

    /// Leaves its node and resumes on `node` after the last seq seen, as a client does.
    async fn move_to(&mut self, cluster: &Cluster, node: usize) {
        self.earlier.extend(self.now.messages());
        let after = seqs(&self.earlier).last().copied().unwrap_or(0);
        let fresh = Player::ws(cluster.node(node), &self.user, Some(after)).await;
        let old = std::mem::replace(&mut self.now, fresh);
        old.close().await;
        let first = self
            .now
            .wait_for("resumed", |m| {
                m["type"] == "resumed" || m["type"] == "welcome"
            })
            .await;
        assert_eq!(
            first["type"], "resumed",
            "{} resumes after {after}: {first}",
            self.user
        );
        self.node = node;
    }

    /// Sends a bet until the table answers it (a moving table answers `unavailable`: the
    /// bet is sent again, as a client does; bets are idempotent).
    async fn bet(&self, round: &Value, id: &str, spot: &str, amount: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        let bet =
            json!({"type": "bet.place", "id": id, "round": round, "spot": spot, "amount": amount});
        let mut from = self.now.messages().len();
        self.now.send(bet.clone());
        loop {
            let fresh = self.now.messages().split_off(from);
            if let Some(answer) = fresh.iter().find(|m| m["id"] == id) {
                if answer["code"] != "unavailable" {
                    return answer.clone();
                }
                from += fresh.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.now.send(bet.clone());
            }
            assert!(
                Instant::now() < deadline,
                "bet {id} never answered: {fresh:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A dealer action on `node`, retried while the table is moving (503).
async fn dealer_until_done(
    cluster: &Cluster,
    node: usize,
    action: &str,
    body: Option<Value>,
) -> Value {
    let node = cluster.node(node);
    let (status, text) = wait_until(
        Duration::from_secs(20),
        &format!("the dealer's {action} is done"),
        async || dealer(node, action, body.clone()).await,
        |(status, _)| *status != 503,
    )
    .await;
    assert_eq!(status, 200, "{action}: {text}");
    serde_json::from_str(&text).expect("JSON")
}

/// Every follower saw 1..=N with no gap or duplicate, the same N for all.
fn assert_gapless(followers: &[Follower]) {
    let first = seqs(&followers[0].all());
    assert_eq!(
        first,
        (1..=first.len() as u64).collect::<Vec<_>>(),
        "gapless from 1"
    );
    for f in followers {
        assert_eq!(
            seqs(&f.all()),
            first,
            "{} (now on node {}) saw another stream",
            f.user,
            f.node
        );
    }
}

/// The final totals every follower got add up the acknowledged bets, and each player's payout
/// lists every bet of theirs that was acknowledged.
fn assert_settled(followers: &[Follower], acked: &Acked) {
    let mut expected: BTreeMap<&str, u64> = SPOTS.iter().map(|s| (*s, 0)).collect();
    for (spot, amount, _) in acked.values() {
        *expected.entry(spot.as_str()).or_default() += amount;
    }
    for f in followers {
        let all = f.all();
        let totals = all
            .iter()
            .rev()
            .find(|m| m["type"] == "totals" && m["final"] == true)
            .unwrap_or_else(|| panic!("{} got the final totals", f.user));
        for spot in SPOTS {
            assert_eq!(
                totals["spots"][spot]["amount"], expected[spot],
                "{}: totals of {spot}",
                f.user
            );
        }
        let mine: Vec<&String> = acked
            .iter()
            .filter(|(_, (_, _, user))| *user == f.user)
            .map(|(id, _)| id)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let payout = all
            .iter()
            .rev()
            .find(|m| m["type"] == "payout")
            .unwrap_or_else(|| panic!("{} got a payout", f.user));
        let paid: Vec<&str> = payout["bets"]
            .as_array()
            .map(|b| b.iter().filter_map(|x| x["id"].as_str()).collect())
            .unwrap_or_default();
        for id in mine {
            assert!(
                paid.contains(&id.as_str()),
                "{}'s payout lists bet {id}: {payout}",
                f.user
            );
        }
    }
}

/// `tablecast audit verify --redis-url URL --table demo`: its report, if it passes.
fn audit(cluster: &Cluster) -> Result<String, String> {
    let redis = cluster.redis().expect("three nodes have Redis");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tablecast"))
        .args([
            "audit",
            "verify",
            "--redis-url",
            &redis.url(),
            "--table",
            "demo",
        ])
        .output()
        .expect("tablecast runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

async fn three_players_per_node(cluster: &Cluster) -> Vec<Follower> {
    let mut followers = Vec::new();
    for i in 0..9 {
        followers.push(Follower::join(cluster, i % 3, format!("p{i}")).await);
    }
    followers
}

/// Every follower places one bet (`tag` + index), acknowledged; recorded in `acked`.
async fn everyone_bets(followers: &[Follower], round: &Value, tag: &str, acked: &mut Acked) {
    for (i, f) in followers.iter().enumerate() {
        let (id, spot, amount) = (format!("{tag}{i}"), SPOTS[i % 3], 100 + i as u64);
        let answer = f.bet(round, &id, spot, amount).await;
        assert_eq!(answer["type"], "bet.accepted", "{answer}");
        acked.insert(id, (spot.to_owned(), amount, f.user.clone()));
    }
}

async fn open_round(cluster: &Cluster, node: usize, followers: &[Follower]) -> Value {
    let opened = dealer_until_done(cluster, node, "open", None).await;
    for f in followers {
        f.now.wait_for("round.opened", is("round.opened")).await;
    }
    opened["round"].clone()
}

async fn settle(cluster: &Cluster, node: usize, followers: &[Follower], outcome: &str) {
    dealer_until_done(cluster, node, "close", None).await;
    dealer_until_done(cluster, node, "result", Some(json!({ "outcome": outcome }))).await;
    for f in followers {
        f.now.wait_for("round.settled", is("round.settled")).await;
    }
}

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

/// `GET /api/v1/cluster/nodes` as seen by `node`: the ids it lists.
async fn listed_nodes(node: &(impl NodeRef + ?Sized)) -> Vec<String> {
    let operator = common::test_token(tablecast::auth::TokenRole::Operator, "*", "ops");
    let Ok(r) = node
        .client()
        .get(node.url("/api/v1/cluster/nodes"))
        .bearer_auth(&operator)
        .send()
        .await
    else {
        return Vec::new();
    };
    let body: Value = r.json().await.unwrap_or(Value::Null);
    body["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| n["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

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
