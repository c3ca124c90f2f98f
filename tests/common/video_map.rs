//! A player's `video.map` (`media::video_map`): the maps it has had, and a check that they
//! map its frames to the dealer's.

use serde_json::Value;
use std::collections::HashSet;
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
/// then checks that each of its frames after that map is a frame `publisher` sent (the
/// synthetic dealer's timestamps are its frames'). Returns the map's clock and how many maps
/// the player has had.
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
    let sent: HashSet<u32> = publisher.stats().frames.iter().map(|(ts, _)| *ts).collect();
    let mut checked = HashSet::new();
    for r in player.stats().video {
        let since = r.timestamp.wrapping_sub(rtp);
        if (since as i32) < 0 {
            continue;
        }
        let named = media_ts.wrapping_add(since);
        assert!(
            sent.contains(&named),
            "{who}'s frame {} maps to {named}, which the dealer never sent (map: rtp {rtp} = \
             media_ts {media_ts} in clock {clock})",
            r.timestamp
        );
        checked.insert(named);
    }
    println!(
        "{who}: video.map rtp {rtp} = media_ts {media_ts} in clock {clock}: {} frames checked",
        checked.len()
    );
    (clock, all.len())
}
