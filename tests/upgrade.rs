//! Upgrading from openraft 0.9: a data dir written by the 0.9 build (a fixture under
//! `tests/fixtures/openraft-0.9-datadir/`, see its README) starts on the current build with its
//! rows, takes writes, and starts again after them. The log's entries, the vote, the committed
//! id and the snapshot's meta are read back in the formats 0.9 wrote.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Node;
use serde_json::json;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create fixture copy");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

fn count(node: &Node) -> i64 {
    common::query_i64s(&node.base_url(), "SELECT COUNT(*) FROM t", "strong")
        .expect("count rows")
        .first()
        .copied()
        .expect("one count")
}

#[test]
fn a_data_dir_written_on_openraft_0_9_starts_with_its_rows_and_takes_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openraft-0.9-datadir");
    copy_dir(&fixture.join("node-1"), &dir.path().join("node-1"));

    // Other ports than the ones the fixture's membership records: a single voter elects itself
    // whatever its advertised address.
    let mut node = Node::new(1, dir.path(), &[]);
    node.start(None);
    node.wait_ready(Duration::from_secs(60));
    assert_eq!(count(&node), 80, "every row written on 0.9 is there");
    let last = common::query_at(
        &node.base_url(),
        "SELECT v FROM t ORDER BY id DESC LIMIT 1",
        "strong",
    )
    .expect("last row");
    assert_eq!(
        common::first_values(&last).expect("values"),
        vec![vec![json!("row 80")]]
    );

    let written = node
        .execute(json!([["INSERT INTO t(v) VALUES(?)", "after the upgrade"]]))
        .expect("write after the upgrade");
    common::check_results(&written).expect("the write succeeds");
    assert_eq!(count(&node), 81);

    node.stop();
    node.restart();
    node.wait_ready(Duration::from_secs(60));
    assert_eq!(
        count(&node),
        81,
        "the write made on the new version survives a restart"
    );
}
