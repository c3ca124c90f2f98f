//! The cluster's log in Redis: fenced, chained appends that load back on any node, and an
//! audit that names a changed entry.

mod common;

use common::log::{connect, event, mute, own, raw, stream_len, table};
use common::redis::RedisServer;
use std::time::{Duration, Instant};
use tablecast::cluster::{Fence, keys};
use tablecast::ids::TableId;
use tablecast::store::{EventStore, RedisStore, StoreError};
use tablecast::table::Record;

#[tokio::test]
async fn appends_load_back_in_order_per_table_on_another_node() {
    let server = RedisServer::start();
    let (a, b) = (table("two-nodes-a"), table("two-nodes-b"));
    own(&server, &a, 3, "n1").await;
    own(&server, &b, 3, "n1").await;
    let first = connect(&server).await;
    assert_eq!(first.load(&a).await.unwrap(), vec![]);
    first
        .append(&a, Fence(3), vec![event(1), mute(0, 1)])
        .await
        .unwrap();
    first.append(&b, Fence(3), vec![mute(1, 1)]).await.unwrap();
    first.append(&a, Fence(3), vec![]).await.unwrap();
    first.append(&a, Fence(3), vec![event(2)]).await.unwrap();
    assert_eq!(first.kind(), "redis");

    let second = connect(&server).await;
    let expected = vec![event(1), mute(0, 1), event(2)];
    assert_eq!(second.load(&a).await.unwrap(), expected);
    assert_eq!(second.load(&b).await.unwrap(), vec![mute(1, 1)]);
    assert_eq!(second.head(&a).await.unwrap(), 3);
    // The lease moves to the second node, which goes on from the first one's chain.
    own(&server, &a, 4, "n2").await;
    second.append(&a, Fence(4), vec![event(3)]).await.unwrap();
    let report = first.audit(&a).await.unwrap();
    assert_eq!((report.records, report.events, report.last_seq), (4, 3, 3));
}

#[tokio::test]
async fn a_stale_fence_is_refused_and_appends_nothing() {
    let server = RedisServer::start();
    let t = table("stale-fence");
    let store = connect(&server).await;
    // No owner at all.
    let e = store
        .append(&t, Fence(6), vec![mute(0, 1)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Fenced {
                fence: Fence(6),
                ..
            }
        ),
        "{e}"
    );
    own(&server, &t, 7, "other").await;
    let e = store
        .append(&t, Fence(6), vec![mute(0, 1)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Fenced {
                fence: Fence(6),
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("another node now owns it"), "{e}");
    // "7:" is the prefix, not "7": fence 77 is another fence.
    own(&server, &t, 77, "other").await;
    let e = store
        .append(&t, Fence(7), vec![mute(0, 1)])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
    assert_eq!(stream_len(&server, &t).await, 0);

    own(&server, &t, 7, "me").await;
    store
        .append(&t, Fence(7), vec![mute(0, 1), mute(0, 2)])
        .await
        .unwrap();
    assert_eq!(stream_len(&server, &t).await, 2);
    assert_eq!(store.load(&t).await.unwrap(), vec![mute(0, 1), mute(0, 2)]);
}

#[tokio::test]
async fn racing_writers_with_one_fence_cannot_fork_the_log() {
    let server = RedisServer::start();
    let t = table("race");
    own(&server, &t, 2, "n").await;
    let (one, two) = (connect(&server).await, connect(&server).await);
    one.append(&t, Fence(2), vec![event(1)]).await.unwrap();
    // Both now hold head i=1.
    assert_eq!(one.load(&t).await.unwrap(), vec![event(1)]);
    assert_eq!(two.load(&t).await.unwrap(), vec![event(1)]);
    let (r1, r2) = tokio::join!(
        one.append(&t, Fence(2), vec![mute(1, 1), mute(1, 2)]),
        two.append(&t, Fence(2), vec![mute(2, 1)]),
    );
    let winner = match (&r1, &r2) {
        (Ok(()), Err(StoreError::Fenced { .. })) => vec![mute(1, 1), mute(1, 2)],
        (Err(StoreError::Fenced { .. }), Ok(())) => vec![mute(2, 1)],
        other => panic!("expected one winner and one Fenced, got {other:?}"),
    };
    let mut expected = vec![event(1)];
    expected.extend(winner);
    let third = connect(&server).await;
    assert_eq!(third.load(&t).await.unwrap(), expected);
    // The loser dropped its head: its next append chains to the winner's entries.
    let loser = if r1.is_err() { &one } else { &two };
    loser.append(&t, Fence(2), vec![event(2)]).await.unwrap();
    expected.push(event(2));
    assert_eq!(third.load(&t).await.unwrap(), expected);
}

/// Rewrites the stream with entry `id`'s `record` field set to `record` (XADD cannot replace an
/// entry, so the script re-adds every entry with its id).
const TAMPER_LUA: &str = r"
local entries = redis.call('XRANGE', KEYS[1], '-', '+')
redis.call('DEL', KEYS[1])
for _, e in ipairs(entries) do
  local f = e[2]
  if e[1] == ARGV[1] then
    for k = 1, #f, 2 do
      if f[k] == 'record' then f[k + 1] = ARGV[2] end
    end
  end
  redis.call('XADD', KEYS[1], e[1], unpack(f))
end
return #entries
";

fn audit(server: &RedisServer, t: &TableId) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tablecast"))
        .args(["audit", "verify", "--redis-url", &server.url(), "--table"])
        .arg(t.to_string())
        .output()
        .expect("tablecast runs")
}

#[tokio::test]
async fn the_audit_passes_a_good_log_and_names_a_changed_entry() {
    let server = RedisServer::start();
    let t = table("audited");
    own(&server, &t, 1, "n").await;
    let store = connect(&server).await;
    store
        .append(&t, Fence(1), vec![event(1), mute(0, 1), event(2)])
        .await
        .unwrap();
    let good = audit(&server, &t);
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(
        stdout.starts_with("ok: 3 records, 2 events, last seq 2, chain head "),
        "{stdout}"
    );

    let forged = serde_json::to_string(&mute(0, 2)).unwrap();
    let mut con = raw(&server).await;
    let n: u64 = redis::Script::new(TAMPER_LUA)
        .key(keys::log(&t))
        .arg("2-0")
        .arg(forged)
        .invoke_async(&mut con)
        .await
        .expect("tamper");
    assert_eq!(n, 3);
    let bad = audit(&server, &t);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("entry 2 (stream id 2-0)"), "{stderr}");
    assert!(
        stderr.contains("the record or its hash was changed"),
        "{stderr}"
    );

    let e = connect(&server).await.load(&t).await.unwrap_err();
    assert!(
        matches!(e, StoreError::RedisCorrupt { entry: 2, .. }),
        "{e}"
    );
    let hint = format!(
        "tablecast audit verify --redis-url {} --table audited",
        server.url()
    );
    assert!(e.to_string().contains(&hint), "{e}");
}

#[tokio::test]
async fn wait_for_replicas_that_do_not_exist_is_an_outage() {
    let server = RedisServer::start();
    let t = table("waited");
    own(&server, &t, 1, "n").await;
    let store = connect(&server).await.with_wait(1, 100);
    let e = store
        .append(&t, Fence(1), vec![event(1)])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("only 0 of 1 replicas"), "{e}");
    let none_needed = connect(&server).await.with_wait(0, 100);
    none_needed
        .append(&t, Fence(1), vec![event(2)])
        .await
        .unwrap();
}

#[tokio::test]
async fn connecting_to_a_closed_port_says_what_to_check() {
    let port = common::redis::free_port();
    let started = Instant::now();
    let e = RedisStore::connect(&format!("redis://127.0.0.1:{port}/0"))
        .await
        .err()
        .expect("nothing listens there");
    assert!(matches!(e, StoreError::Connect { .. }), "{e}");
    assert!(e.to_string().contains("[cluster] redis_url"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_log_longer_than_a_page_loads_whole() {
    let server = RedisServer::start();
    let t = table("long");
    own(&server, &t, 1, "n").await;
    let store = connect(&server).await;
    let records: Vec<Record> = (1..=2500).map(event).collect();
    for batch in records.chunks(900) {
        store.append(&t, Fence(1), batch.to_vec()).await.unwrap();
    }
    let other = connect(&server).await;
    assert_eq!(other.load(&t).await.unwrap(), records);
    let report = other.audit(&t).await.unwrap();
    assert_eq!((report.records, report.last_seq), (2500, 2500));
}
