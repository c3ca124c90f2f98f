//! Records, lease and connection helpers for the tests of the cluster's log.

use super::redis::RedisServer;
use tablecast::cluster::keys;
use tablecast::ids::{BetId, TableId, UserId};
use tablecast::protocol::{PublicEvent, SequencedEvent, ServerTime};
use tablecast::store::RedisStore;
use tablecast::table::Record;

pub fn table(name: &str) -> TableId {
    TableId::parse(name).expect("table id")
}

/// A public chat event with this seq, with text JSON must escape.
pub fn event(seq: u64) -> Record {
    Record::Event(SequencedEvent {
        seq,
        server_ms: ServerTime(1_700_000_000_000 + seq),
        event: PublicEvent::Chat {
            id: BetId::parse(&format!("c{seq}")).expect("id"),
            user: UserId::parse("alice").expect("user"),
            text: format!("hi \"{seq}\"\n\u{e9}"),
        },
    })
}

/// A record naming its writer and number.
pub fn mute(writer: usize, n: u64) -> Record {
    Record::ChatMute {
        at: ServerTime(n),
        user: UserId::parse(&format!("u{writer}")).expect("user"),
        muted: n.is_multiple_of(2),
    }
}

pub async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

/// Gives `table`'s lease to `node` with `fence` (no expiry: tests control it).
pub async fn own(server: &RedisServer, t: &TableId, fence: u64, node: &str) {
    let mut con = raw(server).await;
    redis::cmd("SET")
        .arg(keys::owner(t))
        .arg(format!("{fence}:{node}"))
        .query_async::<()>(&mut con)
        .await
        .expect("SET owner");
}

pub async fn stream_len(server: &RedisServer, t: &TableId) -> u64 {
    let mut con = raw(server).await;
    redis::cmd("XLEN")
        .arg(keys::log(t))
        .query_async(&mut con)
        .await
        .expect("XLEN")
}

pub async fn connect(server: &RedisServer) -> RedisStore {
    match RedisStore::connect(&server.url()).await {
        Ok(store) => store,
        Err(e) => panic!("connect: {e}"),
    }
}
