//! The JavaScript rqlite client, `rqlite-js` 2.5.7 (npm), against a real 3-node raftlite
//! cluster through a follower: runs `tests/js/rqlite_js_check.mjs` with Node.js.
//!
//! `.ci/run` installs the client with `npm ci` from `tests/js/package-lock.json` into a directory
//! and sets `RAFTLITE_TEST_JS_DIR` to it. Without it (or without Node.js, or with another
//! version of the package) this test fails and says how to install; it never skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const PINNED: &str = "2.5.7";

fn how_to_install() -> String {
    let js = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");
    format!(
        "install the client and point the test at it, as .ci/run does:\n  \
         dir=/tmp/raftlite-js && mkdir -p $dir && cp {js}/package.json {js}/package-lock.json $dir/ \
         && (cd $dir && npm ci) && export RAFTLITE_TEST_JS_DIR=$dir\n\
         (Node.js and npm: apt-get install nodejs npm)"
    )
}

/// The `node` to run: `RAFTLITE_TEST_NODE` or `node` on the PATH; fails if it does not run.
fn node_binary() -> String {
    let node = std::env::var("RAFTLITE_TEST_NODE").unwrap_or_else(|_| "node".into());
    match Command::new(&node).arg("--version").output() {
        Ok(out) if out.status.success() => node,
        Ok(out) => panic!(
            "`{node} --version` failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            how_to_install()
        ),
        Err(e) => panic!("cannot run Node.js as `{node}`: {e}\n{}", how_to_install()),
    }
}

/// The directory holding `node_modules/rqlite-js` at the pinned version.
fn js_dir() -> PathBuf {
    let Some(dir) = std::env::var_os("RAFTLITE_TEST_JS_DIR") else {
        panic!("RAFTLITE_TEST_JS_DIR is not set\n{}", how_to_install());
    };
    let dir = PathBuf::from(dir);
    let manifest = dir.join("node_modules/rqlite-js/package.json");
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| {
        panic!(
            "rqlite-js is not installed in {} ({}: {e})\n{}",
            dir.display(),
            manifest.display(),
            how_to_install()
        )
    });
    let version = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_default();
    assert_eq!(
        version,
        PINNED,
        "{} holds rqlite-js {version:?}, the test pins {PINNED}\n{}",
        dir.display(),
        how_to_install()
    );
    dir
}

#[test]
fn rqlite_js_through_a_follower() {
    let node = node_binary();
    let dir = js_dir();
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(10));
    let follower = c.followers(leader)[0];
    // The follower must know its leader before the script asks it for /status.
    wait_for(
        || {
            let s = c.nodes[follower].status().ok()?;
            let want = c.nodes[leader].id.to_string();
            (s["store"]["leader"]["node_id"].as_str() == Some(want.as_str())).then_some(())
        },
        Duration::from_secs(10),
        "the follower to know the leader",
    );
    let urls: Vec<String> = c.nodes.iter().map(Node::base_url).collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/rqlite_js_check.mjs");
    let mut child = Command::new(node)
        .arg(&script)
        .arg(c.nodes[follower].base_url())
        .arg(c.nodes[leader].id.to_string())
        .arg(c.nodes[follower].id.to_string())
        .arg(urls.join(","))
        .env("RAFTLITE_TEST_JS_DIR", &dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn node");
    let run = run_to_completion(&mut child, Duration::from_secs(120));
    println!("{}", run.all_output());
    assert!(
        run.code == Some(0) && !run.timed_out,
        "rqlite-js script failed: {run:?}"
    );
}
