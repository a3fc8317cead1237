//! Tests of `engine/files.rs`: pinning, snapshots, installs and loads.

use super::*;
use crate::engine::disk::sidecar;
use crate::engine::files::{remove_sidecars, switch_to_wal};
use crate::engine::{validate_database, validate_database_fully};
use crate::error::StoreError;

#[test]
fn a_pinned_file_stays_the_snapshot_while_writes_and_checkpoints_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_old_data(dir.path());
    for i in 0..50u64 {
        store
            .apply_write(
                pos(10 + i),
                T,
                &[req(&["INSERT INTO old VALUES (randomblob(4000))"], false)],
            )
            .unwrap();
    }
    let pinned = store.pin_consistent_file().unwrap().unwrap();
    assert_eq!(pinned.meta.applied.map(|p| p.index), Some(59));
    // Far more than the auto-checkpoint threshold (1000 pages) while the pin is held.
    for i in 0..400u64 {
        store
            .apply_write(
                pos(100 + i),
                T,
                &[req(&["INSERT INTO old VALUES (randomblob(16000))"], false)],
            )
            .unwrap();
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut pinned.file.try_clone().unwrap(), &mut bytes).unwrap();
    drop(pinned);
    let copy = dir.path().join("pinned-copy.sqlite");
    std::fs::write(&copy, &bytes).unwrap();
    let meta = validate_database_fully(&copy).unwrap();
    assert_eq!(meta.applied.map(|p| p.index), Some(59));
    let conn = Connection::open(&copy).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM old", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 51);
    // After the pin, the live database has everything.
    assert_eq!(count(&store, "SELECT COUNT(*) FROM old"), 451);
}

#[test]
fn snapshot_and_install_round_trip_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path());
    a.apply_write(
        pos(1),
        T,
        &[req(
            &[
                "CREATE TABLE t(v)",
                "INSERT INTO t VALUES (1)",
                "INSERT INTO t VALUES (2)",
            ],
            false,
        )],
    )
    .unwrap();
    let snap = dir.path().join("snap.sqlite");
    let meta = a.snapshot_to(&snap).unwrap();
    assert_eq!(meta.applied, Some(pos(1)));

    let other = tempfile::tempdir().unwrap();
    let b = open(other.path());
    b.apply_write(pos(1), T, &[req(&["CREATE TABLE old(v)"], false)])
        .unwrap();
    let installed = b.install_from(&snap).unwrap();
    assert_eq!(installed.applied, Some(pos(1)));
    let q = b
        .query(&[Statement::new("SELECT count(*) FROM t")])
        .unwrap();
    assert!(matches!(&q[0], StatementResult::Rows(r) if r.values == vec![vec![Value::Integer(2)]]));
    let old = b.query(&[Statement::new("SELECT * FROM old")]).unwrap();
    assert!(matches!(&old[0], StatementResult::Error(_)));
    // Writes continue on the installed file.
    b.apply_write(pos(2), T, &[req(&["INSERT INTO t VALUES (3)"], false)])
        .unwrap();
    assert!(snap.exists(), "the source is left in place");
}

#[test]
fn an_installed_file_is_switched_to_wal_before_it_takes_the_database_name() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path());
    a.apply_write(pos(1), T, &[req(&["CREATE TABLE t(v)"], false)])
        .unwrap();
    let snap = dir.path().join("snap.sqlite");
    a.snapshot_to(&snap).unwrap();
    let header = |p: &Path| std::fs::read(p).unwrap()[18..20].to_vec();
    assert_eq!(
        header(&snap),
        vec![1, 1],
        "snapshots are rollback-journal files"
    );

    let staging = dir.path().join("staging.sqlite");
    std::fs::copy(&snap, &staging).unwrap();
    // A journal of an earlier staging file must never be rolled back onto a new copy.
    std::fs::write(sidecar(&staging, "-journal"), b"left by a crash").unwrap();
    remove_sidecars(&staging).unwrap();
    switch_to_wal(&staging).unwrap();
    assert_eq!(
        header(&staging),
        vec![2, 2],
        "WAL mode is in the file's own header"
    );
    for suffix in ["-journal", "-wal", "-shm"] {
        assert!(!sidecar(&staging, suffix).exists(), "{suffix} left behind");
    }
    assert!(validate_database(&staging).is_ok());

    let other = tempfile::tempdir().unwrap();
    let b = open(other.path());
    b.install_from(&snap).unwrap();
    let db = other.path().join("db.sqlite");
    assert!(!sidecar(&db, "-journal").exists());
    assert_eq!(header(&db), vec![2, 2]);
    assert_eq!(header(&snap), vec![1, 1], "the source is never modified");
}

#[test]
fn install_refuses_garbage_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_write(pos(1), T, &[req(&["CREATE TABLE t(v)"], false)])
        .unwrap();
    let bad = dir.path().join("bad.sqlite");
    std::fs::write(&bad, b"definitely not sqlite").unwrap();
    assert!(matches!(
        store.install_from(&bad),
        Err(StoreError::NotADatabase { .. })
    ));
    assert_eq!(store.meta().unwrap().applied, Some(pos(1)));
}

#[test]
fn load_replaces_data_and_rewrites_meta_without_touching_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = timeline("t1");
    store.apply_init_timeline(pos(1), &first).unwrap();
    store
        .apply_membership(pos(2), Some("{\"current\":true}"))
        .unwrap();
    store
        .apply_write(pos(3), T, &[req(&["CREATE TABLE old(v)"], false)])
        .unwrap();

    // The source is another raftlite database: its own meta must not leak in.
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(other_dir.path());
    other
        .apply_init_timeline(pos(1), &timeline("foreign"))
        .unwrap();
    other
        .apply_membership(pos(40), Some("{\"foreign\":true}"))
        .unwrap();
    other
        .apply_write(
            pos(41),
            T,
            &[req(
                &["CREATE TABLE t(v)", "INSERT INTO t VALUES (1), (2)"],
                false,
            )],
        )
        .unwrap();
    let source = other_dir.path().join("export.sqlite");
    other.snapshot_to(&source).unwrap();
    let before = std::fs::read(&source).unwrap();

    let mut record = timeline("t2");
    record.reason = "load".into();
    record.counter = 99; // a stale proposer's guess: corrected on apply
    let meta = store.load_from(&source, pos(4), None, &record).unwrap();

    assert_eq!(
        std::fs::read(&source).unwrap(),
        before,
        "the source is never modified"
    );
    assert_eq!(meta.applied, Some(pos(4)));
    assert_eq!(meta.membership_json.as_deref(), Some("{\"current\":true}"));
    let expected = TimelineRecord {
        id: "t2".into(),
        counter: 2,
        parent: Some("t1".into()),
        parent_index: Some(3),
        reason: "load".into(),
        at_unix_ms: 1,
    };
    assert_eq!(meta.timeline_history, vec![first.clone(), expected.clone()]);
    assert_eq!(store.meta().unwrap(), meta);
    assert_eq!(count(&store, "SELECT count(*) FROM t"), 2);
    assert!(matches!(
        &store.query(&[Statement::new("SELECT * FROM old")]).unwrap()[0],
        StatementResult::Error(_)
    ));

    // Writes continue; replaying the load entry afterwards changes nothing.
    store
        .apply_write(pos(5), T, &[req(&["INSERT INTO t VALUES (3)"], false)])
        .unwrap();
    let replay = store.load_from(&source, pos(4), None, &record).unwrap();
    assert_eq!(replay.applied, Some(pos(5)));
    assert_eq!(count(&store, "SELECT count(*) FROM t"), 3);
    assert_eq!(
        store.meta().unwrap().timeline_history,
        vec![first, expected]
    );
    drop(store);
    let reopened = open(dir.path());
    assert_eq!(count(&reopened, "SELECT count(*) FROM t"), 3);
}

#[test]
fn load_accepts_a_plain_wal_mode_file_and_creates_the_meta_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.apply_init_timeline(pos(1), &timeline("t1")).unwrap();
    let source = dir.path().join("plain.sqlite");
    {
        let conn = Connection::open(&source).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE p(v); INSERT INTO p VALUES ('x');")
            .unwrap();
    }
    let meta = store
        .load_from(&source, pos(2), Some("{\"m\":1}".into()), &timeline("t2"))
        .unwrap();
    assert_eq!(meta.applied, Some(pos(2)));
    assert_eq!(meta.membership_json.as_deref(), Some("{\"m\":1}"));
    assert_eq!(meta.timeline_history.len(), 2);
    assert_eq!(count(&store, "SELECT count(*) FROM p"), 1);
    assert!(!sidecar(&store.staging_path(), "-journal").exists() && !store.staging_path().exists());
}

#[test]
fn load_refuses_a_damaged_file_and_keeps_the_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_write(
            pos(1),
            T,
            &[req(
                &["CREATE TABLE t(v)", "INSERT INTO t VALUES (1)"],
                false,
            )],
        )
        .unwrap();
    let good = dir.path().join("good.sqlite");
    store.snapshot_to(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.sqlite");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.sqlite");
    std::fs::write(&garbage, b"not a database at all").unwrap();
    for bad in [&truncated, &garbage] {
        assert!(
            matches!(
                store.load_from(bad, pos(2), None, &timeline("x")),
                Err(StoreError::NotADatabase { .. })
            ),
            "{}",
            bad.display()
        );
    }
    assert_eq!(store.meta().unwrap().applied, Some(pos(1)));
    assert_eq!(count(&store, "SELECT count(*) FROM t"), 1);
}
