use super::*;
use crate::store::test_support::{self, TempDir, event, mute, table};
use crate::store::{LineProblem, audit};

#[tokio::test]
async fn appends_load_back_in_order_per_table() {
    let dir = TempDir::new("file-contract");
    test_support::appends_load_back_in_order_per_table(&FileStore::open(&dir.0).unwrap()).await;
}

#[tokio::test]
async fn records_survive_a_reopen_and_the_chain_goes_on() {
    let dir = TempDir::new("file-reopen");
    let t = table("demo");
    {
        let store = FileStore::open(&dir.0).unwrap();
        assert!(store.load(&t).await.unwrap().is_empty());
        store
            .append(&t, Fence::LOCAL, vec![event(1), mute(0, 1)])
            .await
            .unwrap();
        store
            .append(&t, Fence::LOCAL, vec![event(2)])
            .await
            .unwrap();
        assert_eq!(store.stats().fsyncs, 2);
    }
    let store = FileStore::open(&dir.0).unwrap();
    assert_eq!(
        store.load(&t).await.unwrap(),
        vec![event(1), mute(0, 1), event(2)]
    );
    store
        .append(&t, Fence::LOCAL, vec![event(3)])
        .await
        .unwrap();
    let report = audit::verify(&store.log_path(&t)).unwrap();
    assert_eq!((report.records, report.last_seq), (4, 3));
    assert_eq!(store.log_path(&t), dir.0.join("tables/demo.log"));
}

#[tokio::test]
async fn appends_to_a_table_never_loaded_continue_its_file() {
    let dir = TempDir::new("file-unloaded");
    let t = table("demo");
    {
        let store = FileStore::open(&dir.0).unwrap();
        store
            .append(&t, Fence::LOCAL, vec![event(1)])
            .await
            .unwrap();
    }
    let store = FileStore::open(&dir.0).unwrap();
    store
        .append(&t, Fence::LOCAL, vec![event(2)])
        .await
        .unwrap();
    assert_eq!(store.load(&t).await.unwrap(), vec![event(1), event(2)]);
    audit::verify(&store.log_path(&t)).unwrap();
}

#[tokio::test]
async fn a_load_sees_every_append_sent_before_it() {
    let dir = TempDir::new("file-load-order");
    let store = FileStore::open(&dir.0).unwrap();
    let t = table("demo");
    for n in 1..=20 {
        let (appended, loaded) = tokio::join!(
            store.append(&t, Fence::LOCAL, vec![mute(0, n)]),
            store.load(&t)
        );
        appended.unwrap();
        assert_eq!(loaded.unwrap().len() as u64, n);
    }
    audit::verify(&store.log_path(&t)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_all_land_in_order_with_fewer_fsyncs() {
    const CALLERS: usize = 32;
    const EACH: u64 = 40;
    let dir = TempDir::new("file-concurrent");
    let store = Arc::new(FileStore::open(&dir.0).unwrap());
    let tables = [table("left"), table("right")];
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let (store, tables) = (store.clone(), tables.clone());
        tasks.push(tokio::spawn(async move {
            for n in 1..=EACH {
                // Each caller writes to both tables, in its own order.
                let t = &tables[(caller + n as usize) % 2];
                store
                    .append(t, Fence::LOCAL, vec![mute(caller, n)])
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = store.stats();
    let mut total = 0;
    for t in &tables {
        let records = store.load(t).await.unwrap();
        total += records.len();
        for caller in 0..CALLERS {
            let user = format!("u{caller}");
            let mine: Vec<u64> = records
                .iter()
                .filter_map(|r| match r {
                    Record::ChatMute { at, user: u, .. } if u.as_str() == user => Some(at.0),
                    _ => None,
                })
                .collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "{t}: {user}: {mine:?}"
            );
            assert_eq!(mine.len() as u64, EACH / 2, "{t}: {user}");
        }
        audit::verify(&store.log_path(t)).unwrap();
    }
    assert_eq!(total, CALLERS * EACH as usize);
    assert_eq!(stats.appends, CALLERS as u64 * EACH);
    assert!(
        stats.fsyncs < stats.appends,
        "group commit did not group: {stats:?}"
    );
    eprintln!("concurrent appends: {stats:?}");
}

#[tokio::test]
async fn a_torn_last_line_is_cut_off_and_the_chain_goes_on() {
    let dir = TempDir::new("file-torn");
    let t = table("demo");
    let path = {
        let store = FileStore::open(&dir.0).unwrap();
        store
            .append(&t, Fence::LOCAL, vec![event(1), event(2)])
            .await
            .unwrap();
        store
            .append(&t, Fence::LOCAL, vec![event(3)])
            .await
            .unwrap();
        store.log_path(&t)
    };
    // A crash in the middle of writing the third line: half of it reached the disk.
    let whole = fs::read(&path).unwrap();
    let third = whole[..whole.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .unwrap()
        + 1;
    let torn_len = third + (whole.len() - third) / 2;
    fs::write(&path, &whole[..torn_len]).unwrap();
    assert!(audit::verify(&path).is_err());

    let store = FileStore::open(&dir.0).unwrap();
    assert_eq!(store.load(&t).await.unwrap(), vec![event(1), event(2)]);
    assert_eq!(fs::metadata(&path).unwrap().len(), third as u64);
    store
        .append(&t, Fence::LOCAL, vec![event(3), event(4)])
        .await
        .unwrap();
    let report = audit::verify(&path).unwrap();
    assert_eq!((report.records, report.last_seq), (4, 4));
}

#[tokio::test]
async fn a_damaged_line_fails_the_load_naming_it_and_the_audit_command() {
    let dir = TempDir::new("file-corrupt");
    let t = table("demo");
    let path = {
        let store = FileStore::open(&dir.0).unwrap();
        store
            .append(&t, Fence::LOCAL, vec![event(1), mute(0, 1), event(2)])
            .await
            .unwrap();
        store.log_path(&t)
    };
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replacen("\"muted\":false", "\"muted\":true", 1)).unwrap();
    let store = FileStore::open(&dir.0).unwrap();
    let e = store.load(&t).await.unwrap_err();
    let StoreError::Corrupt { line, reason, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!(*line, 2);
    assert!(matches!(reason, LineProblem::Hash { .. }), "{e}");
    assert!(e.to_string().contains("tablecast audit verify"), "{e}");
    // Appends refuse to extend a damaged chain, and leave the file as it was.
    assert!(matches!(
        store.append(&t, Fence::LOCAL, vec![event(3)]).await,
        Err(StoreError::Corrupt { line: 2, .. })
    ));
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        text.replacen("\"muted\":false", "\"muted\":true", 1)
    );
}

#[tokio::test]
async fn a_second_store_on_the_same_dir_is_refused_until_the_first_is_gone() {
    let dir = TempDir::new("file-lock");
    let first = FileStore::open(&dir.0).unwrap();
    let e = FileStore::open(&dir.0).err().unwrap();
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    assert!(e.to_string().contains("[data] dir"), "{e}");
    drop(first);
    FileStore::open(&dir.0).unwrap();
}

#[test]
fn open_creates_the_tables_dir() {
    let dir = TempDir::new("file-create");
    let data = dir.0.join("nested/data");
    let store = FileStore::open(&data).unwrap();
    assert!(data.join("tables").is_dir());
    assert_eq!(store.kind(), "file");
}
