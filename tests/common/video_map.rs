//! A player's `video.map` (`media::video_map`): the maps it has had, and a check that they
//! map its frames to the dealer's.

use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tablecast::client::{Publisher, Subscriber};

/// The `video.map` messages a player has had on its control channel, in order:
/// (rtp, media_ts, media_clock).
pub fn maps(player: &Subscriber) -> Vec<(u32, u32, u32)> {
    player
        .stats()
        .control_messages
        .iter()
        .filter_map(|t| serde_json::from_str::<Value>(t).ok())
        .filter(|m| m["type"] == "video.map")
        .map(|m| {
            let field = |k: &str| {
                m[k].as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or_else(|| panic!("video.map without a 32-bit {k}: {m}"))
            };
            (field("rtp"), field("media_ts"), field("media_clock"))
        })
        .collect()
}

/// Waits until `player` has more than `maps_before` maps and 60 video packets after the newest,
/// then checks that each of its frames after that map maps to exactly the timestamp `publisher`
/// sent that frame with (each synthetic payload says which frame it is of). Returns the map's
/// clock and how many maps the player has had.
pub async fn frames_map_to_the_dealers(
    player: &Subscriber,
    publisher: &Publisher,
    maps_before: usize,
    who: &str,
) -> (u32, usize) {
    let all = super::wait_until(
        Duration::from_secs(15),
        &format!("{who} has a video.map for the dealer's stream"),
        async || maps(player),
        |m| m.len() > maps_before,
    )
    .await;
    let &(rtp, media_ts, clock) = all.last().expect("a map");
    let after = |p: &Subscriber| {
        p.stats()
            .video
            .iter()
            .filter(|r| (r.timestamp.wrapping_sub(rtp) as i32) >= 0)
            .count()
    };
    super::wait_until(
        Duration::from_secs(10),
        &format!("{who} has 60 video packets after the map"),
        async || after(player),
        |n| *n >= 60,
    )
    .await;
    // Each packet's payload carries its frame's send stamp, so the frame it is of is known
    // exactly: the map must name that frame's timestamp, not merely one the dealer sent.
    let sent: HashMap<u64, u32> = publisher
        .stats()
        .frames
        .iter()
        .map(|&(ts, _, stamp)| (stamp, ts))
        .collect();
    let mut checked = HashSet::new();
    for r in player.stats().video {
        let since = r.timestamp.wrapping_sub(rtp);
        if (since as i32) < 0 {
            continue;
        }
        let Some(&frame) = r.sent_us.and_then(|stamp| sent.get(&stamp)) else {
            continue;
        };
        let named = media_ts.wrapping_add(since);
        assert_eq!(
            named, frame,
            "{who}'s frame {} maps to {named}, but it is the dealer's frame {frame} (map: rtp \
             {rtp} = media_ts {media_ts} in clock {clock})",
            r.timestamp
        );
        checked.insert(named);
    }
    assert!(
        checked.len() >= 10,
        "{who}: only {} of its frames after the map were the dealer's frames remembered",
        checked.len()
    );
    println!(
        "{who}: video.map rtp {rtp} = media_ts {media_ts} in clock {clock}: {} frames checked",
        checked.len()
    );
    (clock, all.len())
}
