//! A cluster node's store: a local mirror of the Redis log that keeps taking records through a
//! Redis outage, backfills them after, and gives way to Redis when the two diverged.

mod common;

use common::log::{connect, event, mute, own, table};
use common::redis::RedisServer;
use std::path::Path;
use std::time::{Duration, Instant};
use tablecast::cluster::Fence;
use tablecast::store::{EventStore, FileStore, SpooledStore, StoreError};

#[tokio::test]
async fn a_redis_outage_spools_locally_and_backfill_catches_up() {
    let mut server = RedisServer::start();
    let t = table("outage");
    own(&server, &t, 5, "n").await;
    let dir = common::temp_dir("spool-outage");
    let spooled = SpooledStore::new(FileStore::open(&dir).unwrap(), connect(&server).await);
    let plain = connect(&server).await;
    assert_eq!(spooled.load(&t).await.unwrap(), vec![]);
    let mut appended = vec![event(1), mute(0, 1)];
    spooled
        .append(&t, Fence(5), appended.clone())
        .await
        .unwrap();
    assert!(!spooled.is_spooling(&t).await);
    assert_eq!(plain.load(&t).await.unwrap(), appended);

    server.kill();
    let started = Instant::now();
    let e = plain
        .append(&t, Fence(5), vec![mute(9, 9)])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unreachable { .. }), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    for batch in [vec![event(2)], vec![mute(0, 2), event(3)], vec![event(4)]] {
        let started = Instant::now();
        spooled.append(&t, Fence(5), batch.clone()).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        appended.extend(batch);
    }
    assert!(spooled.is_spooling(&t).await);
    let e = spooled.backfill(&t, Fence(5)).await.unwrap_err();
    assert!(matches!(e, StoreError::Unreachable { .. }), "{e}");

    server.restart();
    let copied = common::wait_until(
        Duration::from_secs(10),
        "the backfill succeeds",
        async || {
            spooled
                .backfill(&t, Fence(5))
                .await
                .map_err(|e| e.to_string())
        },
        Result::is_ok,
    )
    .await;
    assert_eq!(copied, Ok(4));
    assert!(!spooled.is_spooling(&t).await);
    let fresh = connect(&server).await;
    assert_eq!(fresh.load(&t).await.unwrap(), appended);
    // Shared again: the next batch goes to both.
    spooled.append(&t, Fence(5), vec![event(5)]).await.unwrap();
    appended.push(event(5));
    assert_eq!(fresh.load(&t).await.unwrap(), appended);
    assert_eq!(spooled.local().load(&t).await.unwrap(), appended);
    let _ = std::fs::remove_dir_all(&dir);
}

fn diverged_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("tables"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".diverged-"))
        .collect()
}

#[tokio::test]
async fn load_mirrors_redis_and_moves_a_diverged_local_copy_aside() {
    let server = RedisServer::start();
    let (forked, behind) = (table("forked"), table("behind"));
    own(&server, &forked, 2, "new").await;
    own(&server, &behind, 2, "new").await;
    let dir = common::temp_dir("spool-diverged");
    {
        // This node's copy: one shared record, then one written after it was fenced off.
        let local = FileStore::open(&dir).unwrap();
        local
            .append(&forked, Fence::LOCAL, vec![event(1), mute(0, 1)])
            .await
            .unwrap();
        local
            .append(&behind, Fence::LOCAL, vec![event(1)])
            .await
            .unwrap();
    }
    let redis = connect(&server).await;
    let truth = vec![event(1), mute(1, 1), event(2)];
    redis
        .append(&forked, Fence(2), truth.clone())
        .await
        .unwrap();
    redis
        .append(&behind, Fence(2), truth.clone())
        .await
        .unwrap();

    let spooled = SpooledStore::new(FileStore::open(&dir).unwrap(), connect(&server).await);
    assert_eq!(spooled.load(&forked).await.unwrap(), truth);
    assert_eq!(spooled.load(&behind).await.unwrap(), truth);
    let aside = diverged_files(&dir);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].starts_with("forked.log.diverged-"), "{aside:?}");
    // Both local copies now mirror Redis, and appends go on to both.
    spooled
        .append(&forked, Fence(2), vec![event(3)])
        .await
        .unwrap();
    drop(spooled);
    let local = FileStore::open(&dir).unwrap();
    let mut expected = truth.clone();
    expected.push(event(3));
    assert_eq!(local.load(&forked).await.unwrap(), expected);
    assert_eq!(local.load(&behind).await.unwrap(), truth);
    assert_eq!(redis.load(&forked).await.unwrap(), expected);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_fenced_append_through_the_spool_leaves_no_trace_locally() {
    let server = RedisServer::start();
    let t = table("spool-fenced");
    own(&server, &t, 1, "me").await;
    let dir = common::temp_dir("spool-fenced");
    let spooled = SpooledStore::new(FileStore::open(&dir).unwrap(), connect(&server).await);
    spooled.load(&t).await.unwrap();
    spooled.append(&t, Fence(1), vec![event(1)]).await.unwrap();
    own(&server, &t, 2, "newer").await;
    let e = spooled
        .append(&t, Fence(1), vec![event(2)])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
    // Refused until loaded again; the local copy holds only what Redis holds.
    let e = spooled
        .append(&t, Fence(1), vec![event(2)])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
    assert_eq!(spooled.local().load(&t).await.unwrap(), vec![event(1)]);
    assert_eq!(spooled.load(&t).await.unwrap(), vec![event(1)]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn records_spooled_before_a_restart_are_kept_and_backfilled() {
    let mut server = RedisServer::start();
    let t = table("spool-restart");
    own(&server, &t, 3, "n").await;
    let dir = common::temp_dir("spool-restart");
    let mut appended = vec![event(1)];
    {
        let spooled = SpooledStore::new(FileStore::open(&dir).unwrap(), connect(&server).await);
        spooled.load(&t).await.unwrap();
        spooled
            .append(&t, Fence(3), appended.clone())
            .await
            .unwrap();
        server.kill();
        spooled
            .append(&t, Fence(3), vec![event(2), event(3)])
            .await
            .unwrap();
        appended.extend([event(2), event(3)]);
        assert!(spooled.is_spooling(&t).await);
    }
    server.restart();
    let spooled = SpooledStore::new(FileStore::open(&dir).unwrap(), connect(&server).await);
    // Redis holds a prefix of the local copy: the spooled records were acknowledged, so the
    // local copy wins and the table spools until the backfill.
    assert_eq!(spooled.load(&t).await.unwrap(), appended);
    assert!(spooled.is_spooling(&t).await);
    assert_eq!(spooled.backfill(&t, Fence(3)).await.unwrap(), 2);
    assert_eq!(connect(&server).await.load(&t).await.unwrap(), appended);
    assert!(diverged_files(&dir).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
