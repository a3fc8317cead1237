//! The JavaScript rqlite client, `rqlite-js` 2.5.7 (npm), against a real 3-node raftlite
//! cluster through a follower: runs `tests/js/rqlite_js_check.mjs` with Node.js.
//!
//! The client comes from the directory `RAFTLITE_TEST_JS_DIR` names, or else the test installs it
//! on first use with `npm ci` from `tests/js/package-lock.json` under `target/client-tools/js`.
//! Without Node.js, npm or the registry (or with another version of the package in
//! `RAFTLITE_TEST_JS_DIR`) this test fails and says how to fix it; it never skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const PINNED: &str = "2.5.7";

/// What to do when the client cannot be found or installed.
fn how_to_install() -> String {
    let js = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");
    format!(
        "Unset RAFTLITE_TEST_JS_DIR and the test installs the client itself with `npm ci` under \
         target/client-tools/js (needs Node.js, npm and the npm registry reachable; npm honours \
         npm_config_registry and HTTPS_PROXY), or install it yourself and point the test at it:\n  \
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

/// The directory holding `node_modules/rqlite-js` at the pinned version: `RAFTLITE_TEST_JS_DIR`
/// when set, else `<target dir>/client-tools/js`, where this copies `tests/js/package.json` and
/// `package-lock.json` and runs `npm ci` on first use (reused while its stamp holds the same two
/// files and the pinned version is installed). Anything missing fails the test with how to fix
/// it (never a skip).
fn js_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RAFTLITE_TEST_JS_DIR") {
        let dir = PathBuf::from(dir);
        if let Err(e) = check_installed(&dir) {
            panic!("RAFTLITE_TEST_JS_DIR: {e}\n{}", how_to_install());
        }
        client_tools::announce(&format!(
            "tests/clients_js.rs: rqlite-js from RAFTLITE_TEST_JS_DIR={}",
            dir.display()
        ));
        return dir;
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let files = ["package.json", "package-lock.json"];
    let mut stamp = String::new();
    for file in files {
        let path = source.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        stamp.push_str(&format!("== {file}\n{text}\n"));
    }
    let provisioned = client_tools::provision(
        "js",
        &stamp,
        |dir| {
            for file in files {
                std::fs::copy(source.join(file), dir.join(file))
                    .map_err(|e| format!("copy {file} to {}: {e}", dir.display()))?;
            }
            client_tools::run_install(
                Command::new("npm")
                    .args(["ci", "--loglevel=error", "--no-audit", "--no-fund"])
                    .current_dir(dir),
            )
        },
        check_installed,
    );
    match provisioned {
        Ok(dir) => {
            client_tools::announce(&format!(
                "tests/clients_js.rs: rqlite-js from the provisioned directory {}",
                dir.display()
            ));
            dir
        }
        Err(e) => panic!(
            "could not provision rqlite-js {PINNED} under {}:\n{e}\n{}",
            client_tools::tools_root().display(),
            how_to_install()
        ),
    }
}

/// `dir/node_modules/rqlite-js` is installed at [`PINNED`].
fn check_installed(dir: &Path) -> Result<(), String> {
    let manifest = dir.join("node_modules/rqlite-js/package.json");
    let text = std::fs::read_to_string(&manifest).map_err(|e| {
        format!(
            "rqlite-js is not installed in {} ({}: {e})",
            dir.display(),
            manifest.display()
        )
    })?;
    let version = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_default();
    if version != PINNED {
        return Err(format!(
            "{} holds rqlite-js {version:?}, the test pins {PINNED}",
            dir.display()
        ));
    }
    Ok(())
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
