//! The report of `raftlite-bench --restore-db-mib N` (measured in [`crate::restore`]).

use serde_json::{json, Value};

use crate::compare::Figure;
use crate::fill::{FILL_BLOB_BYTES, FILL_NOTE_BYTES};
use crate::proc::DiskIo;
use crate::report::{cores, median, mib_of, mib_of_kib, opt, round2, VERSION};
use crate::restore::{
    verify_text, NodeMem, RestoreReport, RestoreRound, RESTORE_BACKUP_LEVEL, RESTORE_NODES,
};
use crate::BenchArgs;

pub fn print(args: &BenchArgs, r: &RestoreReport) -> anyhow::Result<()> {
    let cores = cores();
    let version = VERSION;
    let round = round2;
    let ratio_text = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}x"));
    let runs = r.rounds.len();
    let ratios: Vec<f64> = r.rounds.iter().filter_map(RestoreRound::ratio).collect();
    let durable_ratios: Vec<f64> = r
        .rounds
        .iter()
        .filter_map(RestoreRound::durable_ratio)
        .collect();
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (!v.is_empty()).then_some((lo, hi))
    };
    // What no durable restore can beat, against the floor: above 3x in a round, no restore
    // that leaves the file durable on every node can be within 3x of that round's floor.
    let durable_vs_floor: Vec<f64> = r
        .rounds
        .iter()
        .filter_map(|k| Some(k.durable_secs()? / k.floor_secs()?.max(1e-9)))
        .collect();
    let median_wall = median(r.rounds.iter().map(RestoreRound::wall_secs).collect());
    let median_ratio = median(ratios.clone());
    let median_durable_ratio = median(durable_ratios.clone());
    // Each node's largest peak over the runs.
    let node_peaks: Vec<&NodeMem> = match r.rounds.first() {
        Some(first) => (0..first.run.nodes.len())
            .filter_map(|i| {
                r.rounds
                    .iter()
                    .filter_map(|k| k.run.nodes.get(i))
                    .max_by_key(|n| n.peak_kib)
            })
            .collect(),
        None => Vec::new(),
    };
    if args.json {
        let runs_json: Vec<Value> = r
            .rounds
            .iter()
            .map(|k| {
                let floor = match &k.floor {
                    Ok(f) => json!({
                        "wall_secs": round(f.wall.as_secs_f64()),
                        "zstd_secs": round(f.zstd.wall.as_secs_f64()),
                        "cp_secs": round(f.cp.wall.as_secs_f64()),
                        "durable_secs": f.durable.map(|d| round(d.as_secs_f64())),
                        "zstd_peak_rss_mib": mib_of_kib(f.zstd.peak_kib).map(round),
                    }),
                    Err(why) => json!({ "skipped": why }),
                };
                let nodes: Vec<Value> = k
                    .run
                    .nodes
                    .iter()
                    .map(|n| {
                        json!({
                            "node": n.id,
                            "leader": n.leader,
                            "rss_before_mib": mib_of_kib(n.rss_before_kib).map(round),
                            "peak_rss_mib": mib_of_kib(n.peak_kib).map(round),
                            "peak_exact": n.exact,
                            "disk_written_mib": n.disk.map(|d| round(mib_of(d.written))),
                            "disk_read_mib": n.disk.map(|d| round(mib_of(d.read))),
                        })
                    })
                    .collect();
                json!({
                    "floor": floor,
                    "restore": {
                        "nodes": RESTORE_NODES,
                        "wall_secs": round(k.wall_secs()),
                        "ratio_vs_floor": k.ratio().map(round),
                        "ratio_vs_durable_floor": k.durable_ratio().map(round),
                        "download_secs": round(k.run.downloaded.as_secs_f64()),
                        "answered_secs": round(k.run.answered.as_secs_f64()),
                        "cluster_restore_secs": k.run.cluster_secs.map(round),
                        "log_index": k.run.index,
                        "client_peak_rss_mib": mib_of_kib(k.run.client_peak_kib).map(round),
                        "servers": nodes,
                    },
                })
            })
            .collect();
        let doc = json!({
            "raftlite_version": version,
            "cores": cores,
            "load_average_before": r.load_before,
            "database": {
                "requested_mib": r.db_mib,
                "size_bytes": r.source.size_bytes,
                "rows": r.source.rows,
                "payload_bytes": r.source.payload_bytes,
                "build_secs": round(r.source.build.as_secs_f64()),
            },
            "backup": {
                "zstd_level": RESTORE_BACKUP_LEVEL,
                "stored_bytes": r.source.stored_bytes,
                "secs": round(r.source.backup.as_secs_f64()),
                "verify": match &r.source.verify {
                    Ok(v) => json!({
                        "secs": round(v.verify.as_secs_f64()),
                        "zstd_d_secs": round(v.zstd.as_secs_f64()),
                    }),
                    Err(why) => json!({ "skipped": why }),
                },
            },
            "runs": runs_json,
            "summary": {
                "runs": runs,
                "median_wall_secs": median_wall.map(round),
                "median_ratio_vs_floor": median_ratio.map(round),
                "median_ratio_vs_durable_floor": median_durable_ratio.map(round),
                "median_durable_floor_vs_floor": median(durable_vs_floor.clone()).map(round),
                "max_peak_rss_mib": node_peaks
                    .iter()
                    .filter_map(|n| mib_of_kib(n.peak_kib))
                    .reduce(f64::max)
                    .map(round),
            },
            "notes": r.notes,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }

    println!(
        "raftlite {version} restore bench, {cores} cores: {:.1} MiB database ({} rows of {} KiB \
         blob + {} KiB text, half random), built in {:.1} s; backup zstd {RESTORE_BACKUP_LEVEL} \
         {:.1} MiB stored, in {:.1} s (setup, not measured); {}",
        mib_of(r.source.size_bytes),
        r.source.rows,
        FILL_BLOB_BYTES / 1024,
        FILL_NOTE_BYTES / 1024,
        r.source.build.as_secs_f64(),
        mib_of(r.source.stored_bytes),
        r.source.backup.as_secs_f64(),
        verify_text(&r.source.verify)
    );
    if let Some(load) = &r.load_before {
        println!(
            "load average before the run: {load} (other work on the machine skews the figures)"
        );
    }
    println!(
        "{RESTORE_NODES}-node loopback cluster (--backup-to off); `sync` before each measured \
         phase; {runs} run(s), each a floor then a restore"
    );
    // Row labels carry "run N: " when there are several runs.
    let width = if runs > 1 { 54 } else { 44 };
    println!();
    println!(
        "{:<width$} {:>8} {:>9} {:>13}  notes",
        "restore", "wall s", "vs floor", "peak RSS MiB"
    );
    for (i, k) in r.rounds.iter().enumerate() {
        let run = if runs > 1 {
            format!("run {}: ", i + 1)
        } else {
            String::new()
        };
        match &k.floor {
            Ok(f) => println!(
                "{:<width$} {:>8.2} {:>8.2}x {:>13}  zstd -d {:.2} s, cp {:.2} s (no fsync)",
                format!("{run}floor: zstd -d + cp"),
                f.wall.as_secs_f64(),
                1.0,
                opt(mib_of_kib(f.zstd.peak_kib.max(f.cp.peak_kib)), 1),
                f.zstd.wall.as_secs_f64(),
                f.cp.wall.as_secs_f64(),
            ),
            Err(why) => println!(
                "{:<width$} skipped: {why}",
                format!("{run}floor: zstd -d + cp")
            ),
        }
        if let (Some(d), Some(f)) = (k.durable_secs(), k.floor_secs()) {
            println!(
                "{:<width$} {:>8.2} {:>8.2}x {:>13}  zstd -d, then {RESTORE_NODES} copies in \
                 parallel, each fsync'd",
                format!("{run}durable floor: zstd -d + {RESTORE_NODES} x (cp + sync)"),
                d,
                d / f.max(1e-9),
                "-",
            );
        }
        let server_peak = k
            .run
            .nodes
            .iter()
            .filter_map(|n| mib_of_kib(n.peak_kib))
            .fold(0.0, f64::max);
        println!(
            "{:<width$} {:>8.2} {:>9} {:>13}  streamed by {:.2} s, answered at {:.2} s (cluster \
             {} s), all {RESTORE_NODES} nodes serving at {:.2} s; client peak {} MiB; {} the \
             durable floor; {}",
            format!("{run}raftlite: backup streamed to POST /db/load"),
            k.wall_secs(),
            ratio_text(k.ratio()),
            format!("{server_peak:.1}"),
            k.run.downloaded.as_secs_f64(),
            k.run.answered.as_secs_f64(),
            opt(k.run.cluster_secs, 2),
            k.wall_secs(),
            opt(mib_of_kib(k.run.client_peak_kib), 1),
            ratio_text(k.durable_ratio()),
            disk_text(&k.run.nodes, RESTORE_NODES as u64 * r.source.size_bytes),
        );
    }
    if runs > 1 {
        let span =
            |v: &[f64]| range(v).map_or("-".to_owned(), |(lo, hi)| format!("{lo:.2}-{hi:.2}x"));
        println!();
        println!(
            "median of {runs} runs: all {RESTORE_NODES} nodes serving at {} s, {} the floor \
             (runs: {}), {} the durable floor (runs: {}); the durable floor itself took {} the \
             floor (runs: {})",
            opt(median_wall, 2),
            ratio_text(median_ratio),
            span(&ratios),
            ratio_text(median_durable_ratio),
            span(&durable_ratios),
            ratio_text(median(durable_vs_floor.clone())),
            span(&durable_vs_floor),
        );
    }
    println!();
    println!(
        "{:<24} {:>15} {:>15}",
        "server", "RSS before MiB", "peak RSS MiB"
    );
    for n in node_peaks {
        println!(
            "{:<24} {:>15} {:>15}",
            format!(
                "node {}{}",
                n.id,
                if n.leader { " (leader, upload)" } else { "" }
            ),
            opt(mib_of_kib(n.rss_before_kib), 1),
            format!(
                "{}{}",
                opt(mib_of_kib(n.peak_kib), 1),
                if n.exact { "" } else { " (sampled)" }
            ),
        );
    }
    if runs > 1 {
        println!("(each node's largest peak over the runs, and its RSS before that run)");
    }
    for note in &r.notes {
        println!("note: {note}");
    }
    Ok(())
}

/// The nodes' storage traffic during a restore, for the report, beside `floor_bytes`: what the
/// durable floor writes (the file once per node).
fn disk_text(nodes: &[NodeMem], floor_bytes: u64) -> String {
    let Some(each) = nodes
        .iter()
        .map(|n| n.disk)
        .collect::<Option<Vec<DiskIo>>>()
    else {
        return "storage traffic unknown (/proc/PID/io unreadable)".into();
    };
    let per_node = each
        .iter()
        .map(|d| format!("{:.0}", mib_of(d.written)))
        .collect::<Vec<_>>()
        .join("/");
    format!(
        "the nodes wrote {:.0} MiB to storage ({per_node} MiB by node; the durable floor \
         writes {:.0} MiB) and read {:.0} MiB",
        mib_of(each.iter().map(|d| d.written).sum()),
        mib_of(floor_bytes),
        mib_of(each.iter().map(|d| d.read).sum()),
    )
}

/// Per round, the floors and the restore: times, ratios, peaks and storage traffic (the floors,
/// which run no server, show how noisy the machine is). Several rounds are summed up by
/// [`crate::compare`] as their medians.
pub fn figures(r: &RestoreReport) -> Vec<Figure> {
    let each =
        |f: &dyn Fn(&RestoreRound) -> Option<f64>| median(r.rounds.iter().filter_map(f).collect());
    let max_kib = |kib: &mut dyn Iterator<Item = Option<u64>>| mib_of_kib(kib.flatten().max());
    vec![
        Figure::lower("floor (zstd -d + cp): s", each(&RestoreRound::floor_secs)),
        Figure::lower(
            format!("durable floor (zstd -d + {RESTORE_NODES} x (cp + sync)): s"),
            each(&RestoreRound::durable_secs),
        ),
        Figure::lower(
            "restore, all nodes serving: s",
            each(&|k| Some(k.wall_secs())),
        ),
        Figure::lower("restore / floor", each(&RestoreRound::ratio)),
        Figure::lower(
            "restore / durable floor",
            each(&RestoreRound::durable_ratio),
        ),
        Figure::lower(
            "restore, POST /db/load answered: s",
            each(&|k| Some(k.run.answered.as_secs_f64())),
        ),
        Figure::lower(
            "restore, highest server peak RSS MiB",
            max_kib(
                &mut r
                    .rounds
                    .iter()
                    .flat_map(|k| k.run.nodes.iter().map(|n| n.peak_kib)),
            ),
        ),
        Figure::lower(
            "restore, nodes wrote to storage: MiB",
            each(&|k| {
                let disks: Option<Vec<DiskIo>> = k.run.nodes.iter().map(|n| n.disk).collect();
                disks.map(|d| mib_of(d.iter().map(|d| d.written).sum()))
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_traffic_is_summed_over_the_nodes_or_said_unknown() {
        let node = |written_mib: u64, read_mib: u64| NodeMem {
            id: 1,
            leader: false,
            rss_before_kib: None,
            peak_kib: None,
            exact: false,
            disk: Some(DiskIo {
                written: (2 * written_mib) << 20,
                read: read_mib << 20,
            })
            .map(|after| {
                after.since(DiskIo {
                    written: written_mib << 20,
                    read: 0,
                })
            }),
        };
        assert_eq!(
            disk_text(&[node(1024, 0), node(2048, 1024)], 3 << 30),
            "the nodes wrote 3072 MiB to storage (1024/2048 MiB by node; the durable floor writes \
             3072 MiB) and read 1024 MiB"
        );
        let unknown = NodeMem {
            disk: None,
            ..node(1, 1)
        };
        assert!(disk_text(&[node(1, 1), unknown], 0).contains("unknown"));
    }
}
