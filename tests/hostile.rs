//! Bad input never panics and never stops the stream: garbage on the media port while a dealer
//! and a player are live, clients that vanish halfway through the handshake, and a dealer that
//! vanishes after connecting. The node counts what it cannot route and reaps what never finishes.

mod common;

use common::{TestNode, offer, target, wait_until};
use rand::Rng;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tablecast::auth::TokenRole;
use tablecast::client::{SubscribeOptions, Subscriber};

/// One sample of `/metrics` (the first series whose name and labels start with `series`).
async fn metric(node: &TestNode, series: &str) -> i64 {
    let text = node
        .client
        .get(node.metrics_url())
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with([' ', '{', ',']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

const UNROUTABLE: &str = "tablecast_media_datagrams_unroutable_total";
const PUBLISHERS: &str = "tablecast_publishers{table=\"demo\"}";
const SUBSCRIBERS: &str = "tablecast_subscribers{table=\"demo\"}";
const REAPED: &str = "tablecast_sessions_reaped_total";

/// A WHEP session that is answered and then never heard from: (media address, our ufrag,
/// Location).
async fn silent_player(node: &TestNode) -> (SocketAddr, String, String) {
    let r = node
        .client
        .post(node.url("/whep/demo"))
        .bearer_auth(node.token(TokenRole::Player, "demo"))
        .header("Content-Type", "application/sdp")
        .body(offer("recvonly"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let answer = r.text().await.unwrap();
    let candidate = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=candidate:"))
        .expect("the answer carries our candidate");
    // foundation component transport priority address port typ host
    let fields: Vec<&str> = candidate.split_whitespace().collect();
    let addr = format!("{}:{}", fields[4], fields[5])
        .parse()
        .expect("addr");
    let ufrag = answer
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .expect("ufrag")
        .to_owned();
    (addr, ufrag, location)
}

/// A STUN Binding request with this USERNAME and, optionally, a (wrong) MESSAGE-INTEGRITY.
fn stun_request(username: &[u8], integrity: bool, rng: &mut impl Rng) -> Vec<u8> {
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username);
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    if integrity {
        attrs.extend_from_slice(&0x0008u16.to_be_bytes());
        attrs.extend_from_slice(&20u16.to_be_bytes());
        attrs.extend((0..20).map(|_| rng.random::<u8>()));
    }
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    msg.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    msg.extend((0..12).map(|_| rng.random::<u8>()));
    msg.extend_from_slice(&attrs);
    msg
}

fn random_bytes(rng: &mut impl Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.random::<u8>()).collect()
}

/// One garbage datagram of kind `i % 9`, and whether the node can route it to a session (only
/// STUN carrying a live session's ufrag can be, and its agent then refuses it).
fn garbage(i: usize, known_ufrag: &str, rng: &mut impl Rng) -> (Vec<u8>, bool) {
    match i % 9 {
        // Random bytes of any length, first byte anything but STUN's 0-3.
        0 => {
            let len = rng.random_range(1..1500);
            let mut d = random_bytes(rng, len);
            d[0] = rng.random_range(4..=255);
            (d, false)
        }
        // Truncated STUN: a header cut short, or a length beyond the datagram.
        1 => {
            let len = rng.random_range(1..20);
            let mut d = random_bytes(rng, len);
            d[0] = 0;
            (d, false)
        }
        2 => {
            let mut d = stun_request(b"nope:x", false, rng);
            d[3] = 0xff;
            d.truncate(rng.random_range(20..d.len()));
            (d, false)
        }
        // Well-formed STUN for a session that does not exist, with and without UTF-8.
        3 => (stun_request(b"nosuchufrag:x", true, rng), false),
        4 => (stun_request(&[0xff, 0xfe, b':', 0xc0], false, rng), false),
        // STUN naming a live session, with a MESSAGE-INTEGRITY that cannot be right.
        5 => (
            stun_request(format!("{known_ufrag}:x").as_bytes(), true, rng),
            true,
        ),
        // DTLS-looking records (handshake, content type 22, DTLS 1.2).
        6 => {
            let len = rng.random_range(13..1200);
            let mut d = random_bytes(rng, len);
            d[..3].copy_from_slice(&[22, 0xfe, 0xfd]);
            (d, false)
        }
        // RTP- and RTCP-looking packets.
        7 => {
            let len = rng.random_range(12..1300);
            let mut d = random_bytes(rng, len);
            d[0] = 0x80;
            d[1] = 96;
            (d, false)
        }
        _ => {
            let len = rng.random_range(8..200);
            let mut d = random_bytes(rng, len);
            d[0] = 0x81;
            d[1] = 200 + rng.random_range(0..6);
            (d, false)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_media_port_is_counted_and_never_stops_the_stream() {
    let node = TestNode::start().await;
    let epoch = Instant::now();
    let dealer = common::dealer(&node, epoch).await;
    let options = common::media_only();
    let player = common::player(&node, options, epoch).await;
    let (media, known_ufrag, _) = silent_player(&node).await;
    wait_until(
        Duration::from_secs(10),
        "the player gets video and audio: (video, audio) packets",
        async || {
            let s = player.stats();
            (s.video_packets, s.audio_packets)
        },
        |&(video, audio)| video > 0 && audio > 0,
    )
    .await;

    let unroutable_before = metric(&node, UNROUTABLE).await;
    let t0 = Instant::now();
    let sent0 = dealer.stats();
    let blast = tokio::task::spawn_blocking(move || {
        let mut rng = rand::rng();
        let sockets: Vec<UdpSocket> = (0..4)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let (mut total, mut unroutable) = (0usize, 0usize);
        // 25 000 datagrams in about 2.5 s: 250 every 25 ms, from four source addresses.
        for round in 0..100 {
            for i in 0..250 {
                let (d, routable) = garbage(round * 250 + i, &known_ufrag, &mut rng);
                if sockets[i % sockets.len()].send_to(&d, media).is_ok() {
                    total += 1;
                    unroutable += usize::from(!routable);
                }
            }
            // Pacing the blast, not waiting for anything.
            std::thread::sleep(Duration::from_millis(25));
        }
        // Oversized and empty datagrams too.
        for s in &sockets {
            let _ = s.send_to(&[0x80; 4000], media);
            let _ = s.send_to(&[], media);
        }
        (total, unroutable)
    });
    let (total, unroutable) = blast.await.expect("blast");
    let sent1 = dealer.stats();
    // Count what arrives before t1, 100 ms after the dealer's count, awaiting what is in flight.
    let t1 = Instant::now() + Duration::from_millis(100);
    assert!(total >= 24_000, "sent {total} garbage datagrams");

    let sent = (sent1.video_sent + sent1.audio_sent - sent0.video_sent - sent0.audio_sent) as f64;
    assert!(
        sent > 300.0,
        "the dealer sent {sent} packets during the blast"
    );
    wait_until(
        Duration::from_secs(5),
        &format!("the player gets 95% of the {sent} packets sent under garbage: packets"),
        async || {
            let s = player.stats();
            s.video
                .iter()
                .chain(s.audio.iter())
                .filter(|r| r.at >= t0 && r.at < t1)
                .count() as f64
        },
        |&got| got >= 0.95 * sent,
    )
    .await;
    let counted = wait_until(
        Duration::from_secs(5),
        &format!("90% of the {unroutable} unroutable datagrams sent are counted: counted"),
        async || (metric(&node, UNROUTABLE).await - unroutable_before) as f64,
        |&counted| counted >= 0.9 * unroutable as f64,
    )
    .await;
    assert!(
        counted <= (total + 8) as f64,
        "{counted} unroutable datagrams counted for {unroutable} sent ({total} garbage in all)"
    );
    // Still serving: a new player joins and gets video.
    let late = common::player(&node, common::media_only(), epoch).await;
    wait_until(
        Duration::from_secs(10),
        "a player who joins after the garbage gets video: video packets",
        async || late.stats().video_packets,
        |&n| n > 50,
    )
    .await;

    late.close().await.expect("delete");
    player.close().await.expect("delete");
    dealer.close().await.expect("delete");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_vanish_mid_handshake_are_reaped_after_the_connect_timeout() {
    let node = TestNode::start_with(|c| {
        c.media.connect_timeout_secs = 1;
        c.media.idle_timeout_secs = 2;
    })
    .await;
    let reaped_before = metric(&node, REAPED).await;
    // One never does ICE; one does ICE and never starts DTLS.
    let (_, _, location) = silent_player(&node).await;
    let stalled = Subscriber::connect(
        target(&node, TokenRole::Player),
        SubscribeOptions {
            hold_dtls: true,
            wait_connected: false,
            ..Default::default()
        },
        Instant::now(),
    )
    .await
    .expect("the offer is answered");
    assert_eq!(metric(&node, SUBSCRIBERS).await, 2);

    wait_until(
        Duration::from_secs(5),
        "the half-open sessions are reaped: subscribers",
        async || metric(&node, SUBSCRIBERS).await,
        |&n| n == 0,
    )
    .await;
    assert!(!stalled.stats().connected, "DTLS never ran");
    assert_eq!(metric(&node, REAPED).await - reaped_before, 2);
    // The reaped sessions are gone for DELETE too.
    let r = node
        .client
        .delete(node.url(&location))
        .bearer_auth(node.token(TokenRole::Player, "demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(stalled.close().await.expect("DELETE answered"), 404);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dealer_that_vanishes_is_reaped_and_the_camera_can_be_published_again() {
    let node = TestNode::start_with(|c| {
        c.media.connect_timeout_secs = 1;
        c.media.idle_timeout_secs = 2;
    })
    .await;
    let epoch = Instant::now();
    let player = common::player(&node, common::media_only(), epoch).await;
    let dealer = common::dealer(&node, epoch).await;
    wait_until(
        Duration::from_secs(10),
        "the player gets the dealer's video: video packets",
        async || player.stats().video_packets,
        |&n| n > 0,
    )
    .await;
    assert_eq!(metric(&node, PUBLISHERS).await, 1);
    let reaped_before = metric(&node, REAPED).await;

    // The dealer's network vanishes: no DELETE, no DTLS close, nothing more.
    dealer.vanish().await;
    wait_until(
        Duration::from_secs(6),
        "the silent dealer is reaped: publishers",
        async || metric(&node, PUBLISHERS).await,
        |&n| n == 0,
    )
    .await;
    assert_eq!(metric(&node, REAPED).await - reaped_before, 1);
    assert_eq!(
        metric(&node, SUBSCRIBERS).await,
        1,
        "the player, which still talks to the node, stays"
    );

    let before = player.stats().video_packets;
    let dealer2 = common::dealer(&node, epoch).await;
    wait_until(
        Duration::from_secs(10),
        "the waiting player gets the new dealer: video packets since",
        async || player.stats().video_packets - before,
        |&n| n > 50,
    )
    .await;
    assert_eq!(metric(&node, PUBLISHERS).await, 1);
    dealer2.close().await.expect("delete");
    player.close().await.expect("delete");
    node.stop().await;
}
