//! A round played by players spread over a three-node cluster, for the tests of what happens
//! when a node or Redis fails: players that follow the table across connections, acknowledged
//! bets, and the checks that nothing was lost (gapless streams, settled bets, an audited log).

use super::NodeRef;
use super::cluster::{Cluster, THREE_IDS};
use super::control::{Player, dealer, seqs, token_for};
use super::wait_until;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub const SPOTS: [&str; 3] = ["player", "banker", "tie"];

/// Acknowledged bets: id → (spot, amount, user).
pub type Acked = BTreeMap<String, (String, u64, String)>;

pub fn is(ty: &'static str) -> impl Fn(&Value) -> bool {
    move |m| m["type"] == ty
}

/// `GET /api/v1/tables/demo`, or `null` while the node cannot say (the table is moving).
pub async fn snapshot(node: &(impl NodeRef + ?Sized)) -> Value {
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

pub fn index_of(id: &str) -> usize {
    THREE_IDS
        .iter()
        .position(|n| *n == id)
        .unwrap_or_else(|| panic!("owner {id} is one of the nodes"))
}

/// The index of the node that owns the demo table, asked of node `ask`, once it is not `not`.
pub async fn owner(cluster: &Cluster, ask: usize, not: Option<usize>) -> usize {
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
pub async fn successor(cluster: &Cluster, dead: usize) -> usize {
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
pub struct Follower {
    pub user: String,
    pub node: usize,
    pub earlier: Vec<Value>,
    pub now: Player,
}

impl Follower {
    pub async fn join(cluster: &Cluster, node: usize, user: String) -> Follower {
        let now = Player::ws(cluster.node(node), &user, None).await;
        now.wait_for("welcome", is("welcome")).await;
        Follower {
            user,
            node,
            earlier: Vec::new(),
            now,
        }
    }

    pub fn all(&self) -> Vec<Value> {
        let mut all = self.earlier.clone();
        all.extend(self.now.messages());
        all
    }

    pub fn last_seq(&self) -> u64 {
        seqs(&self.all()).last().copied().unwrap_or(0)
    }

    /// Leaves its node and resumes on `node` after the last seq seen, as a client does.
    pub async fn move_to(&mut self, cluster: &Cluster, node: usize) {
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
    pub async fn bet(&self, round: &Value, id: &str, spot: &str, amount: u64) -> Value {
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
pub async fn dealer_until_done(
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
pub fn assert_gapless(followers: &[Follower]) {
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
pub fn assert_settled(followers: &[Follower], acked: &Acked) {
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
pub fn audit(cluster: &Cluster) -> Result<String, String> {
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

pub async fn three_players_per_node(cluster: &Cluster) -> Vec<Follower> {
    let mut followers = Vec::new();
    for i in 0..9 {
        followers.push(Follower::join(cluster, i % 3, format!("p{i}")).await);
    }
    followers
}

/// Every follower places one bet (`tag` + index), acknowledged; recorded in `acked`.
pub async fn everyone_bets(followers: &[Follower], round: &Value, tag: &str, acked: &mut Acked) {
    for (i, f) in followers.iter().enumerate() {
        let (id, spot, amount) = (format!("{tag}{i}"), SPOTS[i % 3], 100 + i as u64);
        let answer = f.bet(round, &id, spot, amount).await;
        assert_eq!(answer["type"], "bet.accepted", "{answer}");
        acked.insert(id, (spot.to_owned(), amount, f.user.clone()));
    }
}

pub async fn open_round(cluster: &Cluster, node: usize, followers: &[Follower]) -> Value {
    let opened = dealer_until_done(cluster, node, "open", None).await;
    for f in followers {
        f.now.wait_for("round.opened", is("round.opened")).await;
    }
    opened["round"].clone()
}

pub async fn settle(cluster: &Cluster, node: usize, followers: &[Follower], outcome: &str) {
    dealer_until_done(cluster, node, "close", None).await;
    dealer_until_done(cluster, node, "result", Some(json!({ "outcome": outcome }))).await;
    for f in followers {
        f.now.wait_for("round.settled", is("round.settled")).await;
    }
}

/// `GET /api/v1/cluster/nodes` as seen by `node`: the ids it lists.
pub async fn listed_nodes(node: &(impl NodeRef + ?Sized)) -> Vec<String> {
    let operator = super::test_token(tablecast::auth::TokenRole::Operator, "*", "ops");
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
