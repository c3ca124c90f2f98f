//! RTX (RFC 4588): a player whose offer has `video/rtx` gets its retransmissions on an RTX stream
//! of their own (own SSRC, payload type and sequence numbers, announced with
//! `a=ssrc-group:FID`); a player without RTX keeps getting plain retransmissions. Both recover.

mod common;

use common::{TestNode, offer, target, wait_until};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tablecast::auth::TokenRole;
use tablecast::client::{PublishOptions, Publisher, SubscribeOptions, Subscriber, SubscriberStats};
use tablecast::media::keyframe::VideoCodec;

/// Share of the video sequence range that arrived, over what had time to be repaired.
fn recovered(s: &SubscriberStats) -> f64 {
    let cutoff = Instant::now() - Duration::from_millis(500);
    let judged: Vec<u16> = s
        .video
        .iter()
        .filter(|r| r.at < cutoff)
        .map(|r| r.seq)
        .collect();
    let first = *judged.first().expect("video arrived");
    let last = *judged.last().expect("video arrived");
    let span = last.wrapping_sub(first) as usize + 1;
    let unique: BTreeSet<u16> = judged.iter().map(|s| s.wrapping_sub(first)).collect();
    unique.len() as f64 / span as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_are_answered_on_rtx_for_players_that_offer_it_and_plainly_otherwise() {
    let node = TestNode::start().await;
    let epoch = Instant::now();
    let dealer = Publisher::connect(
        target(&node, TokenRole::Dealer),
        PublishOptions {
            video: Some(VideoCodec::Vp8),
            ..Default::default()
        },
        epoch,
    )
    .await
    .expect("dealer");
    let lossy = |rtx| SubscribeOptions {
        drop_ratio: 0.05,
        data_channel: false,
        rtx,
        ..Default::default()
    };
    let with_rtx = Subscriber::connect(target(&node, TokenRole::Player), lossy(true), epoch)
        .await
        .expect("player offering RTX");
    let plain = Subscriber::connect(target(&node, TokenRole::Player), lossy(false), epoch)
        .await
        .expect("player without RTX");
    // Enough to judge: about 5 s of video each, with packets dropped.
    wait_until(
        Duration::from_secs(20),
        "each player gets 700 video packets and 20 are dropped: (received, dropped) per player",
        async || {
            [&with_rtx, &plain].map(|p| {
                let s = p.stats();
                (s.video.len(), s.dropped_on_purpose)
            })
        },
        |got| {
            got.iter()
                .all(|&(received, dropped)| received >= 700 && dropped > 20)
        },
    )
    .await;

    for (name, p) in [("RTX", &with_rtx), ("plain", &plain)] {
        let s = p.stats();
        assert!(
            s.dropped_on_purpose > 20,
            "{name}: dropped {}",
            s.dropped_on_purpose
        );
        let r = recovered(&s);
        assert!(r >= 0.995, "{name}: recovered {r:.4} of the video");
        let ssrcs: BTreeSet<u32> = s.video.iter().map(|r| r.ssrc).collect();
        assert_eq!(
            ssrcs.len(),
            1,
            "{name}: the application sees one video SSRC"
        );
    }

    // On the wire: the RTX player has a third SSRC that carries the repairs; the other does not.
    let s = with_rtx.stats();
    let media: BTreeSet<u32> = s
        .video
        .iter()
        .chain(s.audio.iter())
        .map(|r| r.ssrc)
        .collect();
    let repairs: Vec<(u32, u64)> = s
        .wire_ssrcs
        .iter()
        .filter(|(ssrc, _)| !media.contains(ssrc))
        .copied()
        .collect();
    assert_eq!(repairs.len(), 1, "one RTX SSRC: {:?}", s.wire_ssrcs);
    assert!(repairs[0].1 > 20, "{} repairs arrived on RTX", repairs[0].1);
    assert!(
        repairs[0].1 <= 2 * s.dropped_on_purpose,
        "{} repairs for {} losses: a repair must stop the NACKs for its packet",
        repairs[0].1,
        s.dropped_on_purpose
    );
    let s = plain.stats();
    assert_eq!(
        s.wire_ssrcs.len(),
        2,
        "plain: only the media SSRCs: {:?}",
        s.wire_ssrcs
    );

    let m = node
        .node
        .metrics()
        .table(&tablecast::ids::TableId::parse("demo").unwrap());
    let rtx = m.rtx_packets.load(std::sync::atomic::Ordering::Relaxed);
    let all = m.retransmissions.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        rtx > 20 && all > rtx + 20,
        "{rtx} of {all} retransmissions on RTX"
    );

    with_rtx.close().await.expect("delete");
    plain.close().await.expect("delete");
    dealer.close().await.expect("delete");
    node.stop().await;
}

#[tokio::test]
async fn rtx_is_answered_with_its_apt_and_an_fid_group_only_when_offered() {
    let node = TestNode::start().await;
    let answer = |sdp: String| {
        let r = node
            .client
            .post(node.url("/whep/demo"))
            .bearer_auth(node.token(TokenRole::Player, "demo"))
            .header("Content-Type", "application/sdp")
            .body(sdp)
            .send();
        async move {
            let r = r.await.expect("POST");
            assert_eq!(r.status(), 201);
            r.text().await.expect("answer")
        }
    };
    // What browsers offer for VP8: the codec and its RTX (`apt`).
    let browser_like = offer("recvonly")
        .replace(
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        )
        .replace(
            "a=rtpmap:96 VP8/90000\r\n",
            "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n",
        );
    let sdp = answer(browser_like).await;
    assert!(sdp.contains("a=rtpmap:97 rtx/90000"), "{sdp}");
    assert!(sdp.contains("a=fmtp:97 apt=96"), "{sdp}");
    assert!(sdp.contains("a=ssrc-group:FID "), "{sdp}");

    // Browsers number their codecs their own way: H.264 on 106 with RTX on 107.
    let h264 = offer("recvonly")
        .replace(
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "m=video 9 UDP/TLS/RTP/SAVPF 106 107",
        )
        .replace(
            "a=rtpmap:96 VP8/90000\r\n",
            "a=rtpmap:106 H264/90000\r\na=rtcp-fb:106 nack\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\na=rtpmap:107 rtx/90000\r\na=fmtp:107 apt=106\r\n",
        );
    let sdp = answer(h264).await;
    assert!(sdp.contains("a=fmtp:107 apt=106"), "{sdp}");
    assert!(sdp.contains("a=ssrc-group:FID "), "{sdp}");

    let sdp = answer(offer("recvonly")).await;
    assert!(!sdp.contains("rtx/") && !sdp.contains("FID"), "{sdp}");
    node.stop().await;
}
