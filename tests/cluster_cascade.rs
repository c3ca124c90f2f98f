//! The cascade: a dealer publishes to the table's owner (the origin), players watch on every
//! node, and each other node pulls the camera from the origin once, whatever its number of
//! players, through a relay session (ICE + DTLS-SRTP between the nodes).

mod common;

use common::cluster::Cluster;
use common::round::{owner, successor};
use common::{NodeRef, wait_until};
use std::time::{Duration, Instant};
use tablecast::auth::TokenRole;
use tablecast::client::{Publisher, Received, SubscribeOptions, Subscriber};

/// A sample of `name` with `labels` (as `table="demo",direction="in"`) from `/metrics`.
async fn metric(node: &common::process::NodeProcess, name: &str, labels: &str) -> Option<f64> {
    let text = reqwest::get(node.metrics_url())
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

async fn forwarded(node: &common::process::NodeProcess) -> f64 {
    metric(
        node,
        "tablecast_rtp_packets_forwarded_total",
        "table=\"demo\"",
    )
    .await
    .unwrap_or(0.0)
}

async fn received(node: &common::process::NodeProcess) -> f64 {
    metric(
        node,
        "tablecast_rtp_packets_received_total",
        "table=\"demo\"",
    )
    .await
    .unwrap_or(0.0)
}

async fn relays(node: &common::process::NodeProcess, direction: &str) -> f64 {
    metric(
        node,
        "tablecast_relays",
        &format!("table=\"demo\",direction=\"{direction}\""),
    )
    .await
    .unwrap_or(0.0)
}

/// Largest forward step between consecutive sequence numbers, in arrival order.
fn largest_jump(packets: &[Received]) -> i32 {
    packets
        .windows(2)
        .map(|w| w[1].seq.wrapping_sub(w[0].seq) as i16 as i32)
        .max()
        .unwrap_or(0)
}

/// Distinct sequence numbers a player received, and how many the span from its first to its
/// last one holds (what it should have received).
fn coverage(packets: &[Received]) -> (usize, usize) {
    let Some(first) = packets.first() else {
        return (0, 0);
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut ext = 0i64;
    let mut prev = first.seq;
    for p in packets {
        ext += p.seq.wrapping_sub(prev) as i16 as i64;
        prev = p.seq;
        seen.insert(ext);
    }
    let span =
        (seen.last().copied().unwrap_or(0) - seen.first().copied().unwrap_or(0) + 1) as usize;
    (seen.len(), span)
}

async fn players_on(
    node: &common::process::NodeProcess,
    n: usize,
    epoch: Instant,
) -> Vec<Subscriber> {
    let mut players = Vec::new();
    for i in 0..n {
        let target = tablecast::client::Target {
            base_url: node.base_url(),
            table: "demo".into(),
            camera: None,
            token: node.issue_token(TokenRole::Player, "demo", &format!("p{}-{i}", node.id)),
        };
        let player = Subscriber::connect(target, SubscribeOptions::default(), epoch)
            .await
            .unwrap_or_else(|e| panic!("a player joins node {}: {e}", node.id));
        assert!(
            player
                .resource
                .location
                .starts_with(&format!("{}/whep/demo/", node.base_url())),
            "a player is served by the node it asked, {}: {}",
            node.id,
            player.resource.location
        );
        players.push(player);
    }
    players
}

async fn all_get_video(players: &[Subscriber], more_than: u64, what: &str) {
    wait_until(
        Duration::from_secs(20),
        what,
        async || {
            players
                .iter()
                .map(|p| {
                    let s = p.stats();
                    s.video_packets.min(s.audio_packets * 4)
                })
                .min()
        },
        |least| least.is_some_and(|n| n > more_than),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_on_two_edges_get_the_dealer_through_one_relay_per_edge() {
    let cluster = Cluster::three("").await;
    let origin = owner(&cluster, 0, None).await;
    let (b, c) = ((origin + 1) % 3, (origin + 2) % 3);
    let epoch = Instant::now();
    let dealer = common::dealer(cluster.node(origin), epoch).await;
    let mut players = players_on(cluster.node(b), 5, epoch).await;
    players.extend(players_on(cluster.node(c), 5, epoch).await);
    all_get_video(
        &players,
        100,
        "every edge player gets video and audio; the fewest video packets",
    )
    .await;

    // The control plane reaches them on the same connection.
    wait_until(
        Duration::from_secs(10),
        "every edge player's control data channel opens",
        async || players.iter().filter(|p| p.stats().control_open).count(),
        |&n| n == players.len(),
    )
    .await;
    for p in &players {
        p.send_control(r#"{"type":"hello","token":""}"#);
    }
    wait_until(
        Duration::from_secs(10),
        "every edge player has its welcome on the control data channel",
        async || {
            players
                .iter()
                .filter(|p| {
                    p.stats()
                        .control_messages
                        .iter()
                        .any(|m| m.contains("\"welcome\""))
                })
                .count()
        },
        |&n| n == players.len(),
    )
    .await;

    // One relay per edge, at both ends.
    wait_until(
        Duration::from_secs(5),
        "the origin serves two relays and each edge pulls one: (origin out, b in, c in)",
        async || {
            (
                relays(cluster.node(origin), "out").await,
                relays(cluster.node(b), "in").await,
                relays(cluster.node(c), "in").await,
            )
        },
        |&r| r == (2.0, 1.0, 1.0),
    )
    .await;

    // The node list says who pulls what from whom.
    let ops = cluster
        .node(origin)
        .issue_token(TokenRole::Operator, "*", "ops");
    let origin_id = cluster.node(origin).id.clone();
    wait_until(
        Duration::from_secs(10),
        "GET /api/v1/cluster/nodes lists each edge's pull of demo/main from the origin",
        async || {
            let body: serde_json::Value = reqwest::Client::new()
                .get(cluster.node(origin).url("/api/v1/cluster/nodes"))
                .bearer_auth(&ops)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let pulls: Vec<String> = body["nodes"]
                .as_array()?
                .iter()
                .flat_map(|n| {
                    let id = n["id"].as_str().unwrap_or_default().to_owned();
                    n["relays"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |r| {
                            format!(
                                "{id}:{}/{}<{}",
                                r["table"].as_str().unwrap_or("?"),
                                r["camera"].as_str().unwrap_or("?"),
                                r["from"].as_str().unwrap_or("?")
                            )
                        })
                })
                .collect();
            Some(pulls)
        },
        |pulls| {
            let mut want = vec![
                format!("{}:demo/main<{origin_id}", cluster.node(b).id),
                format!("{}:demo/main<{origin_id}", cluster.node(c).id),
            ];
            want.sort();
            pulls.as_ref().is_some_and(|p| {
                let mut p = p.clone();
                p.sort();
                p == want
            })
        },
    )
    .await;

    // Over a window, the origin forwards about two streams' worth (one per edge), and each
    // edge about five (one per player), of what it receives.
    let before = [
        (
            received(cluster.node(origin)).await,
            forwarded(cluster.node(origin)).await,
        ),
        (
            received(cluster.node(b)).await,
            forwarded(cluster.node(b)).await,
        ),
        (
            received(cluster.node(c)).await,
            forwarded(cluster.node(c)).await,
        ),
    ];
    let window = wait_until(
        Duration::from_secs(20),
        "the origin has received 300 more packets from the dealer",
        async || received(cluster.node(origin)).await - before[0].0,
        |&n| n >= 300.0,
    )
    .await;
    assert!(window >= 300.0);
    let ratio = async |i: usize, node: usize| {
        let got = received(cluster.node(node)).await - before[i].0;
        let sent = forwarded(cluster.node(node)).await - before[i].1;
        sent / got.max(1.0)
    };
    let (ro, rb, rc) = (ratio(0, origin).await, ratio(1, b).await, ratio(2, c).await);
    println!(
        "packets forwarded per packet received: origin {ro:.2}, edge b {rb:.2}, edge c {rc:.2}"
    );
    assert!(
        (1.6..=2.4).contains(&ro),
        "the origin forwards one copy per edge, not per player: {ro:.2}"
    );
    assert!(
        (4.0..=6.0).contains(&rb),
        "edge b forwards one copy per local player: {rb:.2}"
    );
    assert!(
        (4.0..=6.0).contains(&rc),
        "edge c forwards one copy per local player: {rc:.2}"
    );

    for p in &players {
        let s = p.stats();
        let (got, span) = coverage(&s.video);
        let ssrcs: std::collections::BTreeSet<u32> = s.video.iter().map(|r| r.ssrc).collect();
        assert_eq!(ssrcs.len(), 1, "one video SSRC per player: {ssrcs:?}");
        assert!(
            got as f64 >= span as f64 * 0.995,
            "an edge player receives at least 99.5% of the video: {got} of {span}"
        );
    }

    // The last player of an edge leaves: its pull ends a little later, the other stays.
    let on_c = players.split_off(5);
    for p in on_c {
        p.close().await.expect("a player on c hangs up");
    }
    let left = Instant::now();
    wait_until(
        Duration::from_secs(15),
        "edge c drops its pull after its last player left, and the origin serves one relay: (c in, origin out)",
        async || (relays(cluster.node(c), "in").await, relays(cluster.node(origin), "out").await),
        |&r| r == (0.0, 1.0),
    )
    .await;
    println!(
        "edge c dropped its pull {} ms after its last player left",
        left.elapsed().as_millis()
    );
    assert!(
        left.elapsed() >= Duration::from_secs(4),
        "a pull lingers a while after its last player, for players who reload"
    );
    let b_before = players[0].stats().video_packets;
    all_get_video(&players, b_before + 50, "players on b keep getting video").await;
    drop(dealer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_origin_dies_edge_players_keep_their_sessions_and_a_continuous_stream() {
    let cluster = Cluster::three("").await;
    let origin = owner(&cluster, 0, None).await;
    let (b, c) = ((origin + 1) % 3, (origin + 2) % 3);
    let epoch = Instant::now();
    let dealer = common::dealer(cluster.node(origin), epoch).await;
    let mut players = players_on(cluster.node(b), 2, epoch).await;
    players.extend(players_on(cluster.node(c), 2, epoch).await);
    all_get_video(
        &players,
        100,
        "every edge player gets video before the origin dies",
    )
    .await;
    let sessions: Vec<String> = players
        .iter()
        .map(|p| p.resource.location.clone())
        .collect();

    // The players' maps so far (of the first dealer stream, through the first origin).
    let maps_before: Vec<usize> = players
        .iter()
        .map(common::video_map::maps)
        .map(|m| m.len())
        .collect();

    cluster.node(origin).kill();
    drop(dealer);
    let killed = Instant::now();
    let heir = successor(&cluster, origin).await;
    // The dealer's client reconnects as OBS would: a POST to a surviving node, following the
    // 307 to the new owner.
    let survivor = if heir == b { c } else { b };
    let dealer = Publisher::connect(
        common::target(cluster.node(survivor), TokenRole::Dealer),
        tablecast::client::PublishOptions::default(),
        epoch,
    )
    .await
    .unwrap_or_else(|e| panic!("the dealer publishes again through a survivor: {e}"));
    assert!(
        dealer
            .resource
            .location
            .starts_with(&cluster.node(heir).base_url()),
        "the dealer lands on the new owner: {}",
        dealer.resource.location
    );
    let counts: Vec<u64> = players.iter().map(|p| p.stats().video_packets).collect();
    wait_until(
        Duration::from_secs(20),
        "every player's video resumes on its own session; (player, packets since)",
        async || {
            players
                .iter()
                .zip(&counts)
                .map(|(p, &n)| p.stats().video_packets.saturating_sub(n))
                .min()
        },
        |least| least.is_some_and(|n| n > 100),
    )
    .await;
    println!(
        "video back on every edge player {} ms after the origin was killed",
        killed.elapsed().as_millis()
    );
    for (p, session) in players.iter().zip(&sessions) {
        assert_eq!(&p.resource.location, session, "the player kept its session");
        let s = p.stats();
        let ssrcs: std::collections::BTreeSet<u32> = s.video.iter().map(|r| r.ssrc).collect();
        assert_eq!(
            ssrcs.len(),
            1,
            "one video SSRC through the failover: {ssrcs:?}"
        );
        let jump = largest_jump(&s.video);
        assert!(
            jump <= 2,
            "video sequence numbers continue through the failover (largest step {jump})"
        );
        let audio_jump = largest_jump(&s.audio);
        assert!(
            audio_jump <= 2,
            "audio sequence numbers continue through the failover (largest step {audio_jump})"
        );
    }
    // Pulled again from the new owner, each player is mapped to the dealer's new stream.
    for (i, (p, &before)) in players.iter().zip(&maps_before).enumerate() {
        let old = before
            .checked_sub(1)
            .and_then(|n| common::video_map::maps(p).get(n).map(|m| m.2));
        let (clock, _) = common::video_map::frames_map_to_the_dealers(
            p,
            &dealer,
            before,
            &format!("edge player {i}"),
        )
        .await;
        assert_ne!(
            Some(clock),
            old,
            "edge player {i} is mapped to the new stream's clock"
        );
    }
    players.clear();
    drop(dealer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_on_an_edge_whose_hop_loses_five_percent_still_get_the_video() {
    let cluster =
        Cluster::three_with_env(&[(tablecast::media::relay::TEST_LOSS_ENV, "0.05")]).await;
    let origin = owner(&cluster, 0, None).await;
    let edge = (origin + 1) % 3;
    let epoch = Instant::now();
    let dealer = common::dealer(cluster.node(origin), epoch).await;
    let players = players_on(cluster.node(edge), 3, epoch).await;
    all_get_video(
        &players,
        1500,
        "edge players get 1,500 video packets through a lossy hop",
    )
    .await;
    // The hop did lose packets, and the origin resent them to the edge.
    let resent = metric(
        cluster.node(origin),
        "tablecast_rtp_retransmitted_packets_total",
        "table=\"demo\"",
    )
    .await
    .unwrap_or(0.0);
    let sent = forwarded(cluster.node(origin)).await;
    println!("the origin resent {resent} of {sent} packets to the edge");
    assert!(
        resent >= sent * 0.02,
        "the hop loses packets and the origin resends them: {resent} of {sent}"
    );
    for p in &players {
        let s = p.stats();
        // From the first keyframe on; a few packets at the very end may still be on their way.
        let (got, span) = coverage(&s.video[..s.video.len() - 20]);
        let share = got as f64 / span.max(1) as f64;
        println!(
            "an edge player received {got} of {span} video packets ({:.2}%) with 5% lost on the hop",
            share * 100.0
        );
        assert!(
            share >= 0.995,
            "an edge player receives at least 99.5% of the video: {got} of {span}"
        );
    }
    drop(dealer);
}

/// Joins `n` players to `node` at once; each with the instant its join began.
async fn storm(
    node: &common::process::NodeProcess,
    n: usize,
    epoch: Instant,
) -> Vec<(Instant, Subscriber)> {
    let joins = (0..n).map(|i| {
        let target = tablecast::client::Target {
            base_url: node.base_url(),
            table: "demo".into(),
            camera: None,
            token: node.issue_token(TokenRole::Player, "demo", &format!("s{}-{i}", node.id)),
        };
        async move {
            let began = Instant::now();
            let player = Subscriber::connect(target, SubscribeOptions::default(), epoch)
                .await
                .unwrap_or_else(|e| panic!("a player joins node {}: {e}", node.id));
            (began, player)
        }
    });
    futures_util::future::join_all(joins).await
}

/// Milliseconds from each player's join to its first video packet, sorted.
fn first_frame_ms(players: &[(Instant, Subscriber)]) -> Vec<u64> {
    let mut ms: Vec<u64> = players
        .iter()
        .filter_map(|(began, p)| {
            p.stats()
                .first_video_at
                .map(|t| t.saturating_duration_since(*began).as_millis() as u64)
        })
        .collect();
    ms.sort_unstable();
    ms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_storm_on_the_edges_is_one_keyframe_request_per_throttle_window_at_the_dealer() {
    let cluster = Cluster::three("").await;
    let origin = owner(&cluster, 0, None).await;
    let (b, c) = ((origin + 1) % 3, (origin + 2) % 3);
    let epoch = Instant::now();
    let dealer = common::dealer(cluster.node(origin), epoch).await;
    // The dealer publishes for a second first: what it is asked at its own start is not the
    // storm's.
    wait_until(
        Duration::from_secs(10),
        "the dealer has sent a second of video",
        async || dealer.stats().video_sent,
        |&n| n > 150,
    )
    .await;

    // Ten players at once on each edge (neither pulls the camera yet) and on the origin.
    let plis_before = dealer.stats().plis_received;
    let began = Instant::now();
    let (on_b, on_c, on_origin) = tokio::join!(
        storm(cluster.node(b), 10, epoch),
        storm(cluster.node(c), 10, epoch),
        storm(cluster.node(origin), 10, epoch),
    );
    let everyone: Vec<&Subscriber> = on_b
        .iter()
        .chain(&on_c)
        .chain(&on_origin)
        .map(|(_, p)| p)
        .collect();
    wait_until(
        Duration::from_secs(20),
        "every player of the storm gets video; how many do",
        async || {
            everyone
                .iter()
                .filter(|p| p.stats().first_video_at.is_some())
                .count()
        },
        |&n| n == everyone.len(),
    )
    .await;
    // Read the count first: every request it holds reached the dealer within `window`.
    let plis = dealer.stats().plis_received - plis_before;
    let window = began.elapsed();
    let asked: u64 = everyone.iter().map(|p| p.stats().plis_sent).sum();
    // The throttle lets one request through per 500 ms and camera, at each edge and again at
    // the origin: the dealer hears at most one per window, plus the one that opens it.
    let allowed = window.as_millis() as u64 / 500 + 1;
    eprintln!(
        "join storm: 30 players over {} ms; the players asked {asked} keyframes, the dealer was asked {plis} (at most {allowed})",
        window.as_millis()
    );
    assert!(
        plis <= allowed,
        "the dealer got {plis} keyframe requests in {} ms: more than one per 500 ms",
        window.as_millis()
    );

    let edge: Vec<u64> = {
        let mut all = first_frame_ms(&on_b);
        all.extend(first_frame_ms(&on_c));
        all.sort_unstable();
        all
    };
    let home = first_frame_ms(&on_origin);
    let median = |v: &[u64]| v[v.len() / 2];
    eprintln!(
        "first video packet after the join (ms): on the edges median {} max {}; on the origin median {} max {}",
        median(&edge),
        edge[edge.len() - 1],
        median(&home),
        home[home.len() - 1]
    );
    // Loose: the edges had to start their pulls during the storm. `tablecast bench` holds the
    // tight figure.
    assert!(
        median(&edge) <= median(&home) + 2_000,
        "edge players waited {} ms for video, origin players {} ms",
        median(&edge),
        median(&home)
    );
}

/// A player on an edge node can find the frame a result names, as one on the origin can: the
/// origin tells the edge's pull which camera frame each relay stream's frame is, and the edge
/// tells its players (`video.map`). Their frames map to the frames the dealer sent, in the
/// same clock as the origin's players'. When the dealer reconnects at the origin the relay
/// stream runs on unchanged, and the edge's players are mapped again, to the new clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_players_map_their_frames_to_the_dealers_through_the_relay() {
    use common::video_map::frames_map_to_the_dealers;
    let cluster = Cluster::three("").await;
    let origin = owner(&cluster, 0, None).await;
    let edge = (origin + 1) % 3;
    let epoch = Instant::now();
    let first = common::dealer(cluster.node(origin), epoch).await;
    let at_origin = players_on(cluster.node(origin), 1, epoch).await;
    let at_edge = players_on(cluster.node(edge), 1, epoch).await;
    let (o_clock, o_maps) =
        frames_map_to_the_dealers(&at_origin[0], &first, 0, "the origin's player").await;
    let (e_clock, e_maps) =
        frames_map_to_the_dealers(&at_edge[0], &first, 0, "the edge's player").await;
    assert_eq!(
        o_clock, e_clock,
        "both players' maps are in the dealer's clock"
    );

    // The dealer reconnects at the origin: a new stream and clock.
    first.close().await.ok();
    let second = common::dealer(cluster.node(origin), epoch).await;
    let (o_clock2, _) =
        frames_map_to_the_dealers(&at_origin[0], &second, o_maps, "the origin's player").await;
    let (e_clock2, _) =
        frames_map_to_the_dealers(&at_edge[0], &second, e_maps, "the edge's player").await;
    assert_ne!(
        o_clock2, o_clock,
        "the reconnected dealer's stream is a new clock"
    );
    assert_eq!(
        o_clock2, e_clock2,
        "the edge's player follows the new clock"
    );
    drop(at_origin);
    drop(at_edge);
    second.close().await.ok();
}
