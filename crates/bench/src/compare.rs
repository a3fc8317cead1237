//! `--compare-bin OLD`: the same measurement for two server binaries in one run, alternating,
//! and one table of old, new and new/old per figure. This is how a refactor shows its figures
//! within noise: both builds measured on the same machine, minutes apart, in both orders.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::json;

use crate::etcd::EtcdPlan;
use crate::report::{cores, median, round2, VERSION};
use crate::tools::WorkDir;
use crate::{interruptible, BenchArgs, Mode};

/// Which way a figure improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

impl Better {
    fn word(self) -> &'static str {
        match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
        }
    }
}

/// One number of a report, named with its unit (`3-node, 16 clients: inserts/s`).
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub name: String,
    pub better: Better,
    /// `None` when the run could not measure it (a tool missing, a file unreadable).
    pub value: Option<f64>,
}

impl Figure {
    pub fn higher(name: impl Into<String>, value: Option<f64>) -> Self {
        Figure {
            name: name.into(),
            better: Better::Higher,
            value,
        }
    }

    pub fn lower(name: impl Into<String>, value: Option<f64>) -> Self {
        Figure {
            name: name.into(),
            better: Better::Lower,
            value,
        }
    }
}

/// The two binaries, in the order of the table's columns.
const SIDES: [&str; 2] = ["old", "new"];

/// Measures `mode` for `old` and `new` `--compare-rounds` times each, alternating (old first in
/// odd rounds, new first in even ones, so a machine that drifts does not favour one), then
/// prints the table. Each measurement gets its own work directory (`old-1`, `new-1`, ...),
/// removed after it unless `--work-dir` was given.
pub async fn run(args: &BenchArgs, mode: Mode, old: &Path, new: &Path) -> anyhow::Result<()> {
    let rounds = args.compare_rounds;
    if rounds == 0 {
        bail!("--compare-rounds must be at least 1");
    }
    let base = WorkDir::create(args.work_dir.clone())?;
    let bins = [old, new];
    // Two raftlite builds are compared; etcd would only double the run's length.
    let no_etcd = EtcdPlan::Skip("not measured with --compare-bin".into());
    let mut runs: [Vec<Vec<Figure>>; 2] = [Vec::new(), Vec::new()];
    let mut lost = Vec::new();
    for round in 1..=rounds {
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for side in order {
            let (name, bin) = (SIDES[side], bins[side]);
            eprintln!(
                "bench: round {round} of {rounds}, {name} server {}",
                bin.display()
            );
            let work = base.child(&format!("{name}-{round}"))?;
            let root = std::fs::canonicalize(&work.path)
                .with_context(|| format!("cannot resolve {}", work.path.display()))?;
            let report = interruptible(mode.measure(args, bin, &root, &no_etcd))
                .await
                .with_context(|| format!("round {round}, {name} server {}", bin.display()))?;
            if let Err(e) = report.check() {
                lost.push(format!("round {round}, {name} server: {e:#}"));
            }
            runs[side].push(report.figures());
        }
    }
    let [old_runs, new_runs] = runs;
    let rows = table(&old_runs, &new_runs);
    print(args, mode, old, new, &rows)?;
    if !lost.is_empty() {
        bail!("{}", lost.join("; "));
    }
    Ok(())
}

/// A line of the table: one figure's values over the rounds, for each binary.
#[derive(Debug)]
struct Line {
    name: String,
    better: Better,
    old: Vec<f64>,
    new: Vec<f64>,
}

impl Line {
    fn old_median(&self) -> Option<f64> {
        median(self.old.clone())
    }

    fn new_median(&self) -> Option<f64> {
        median(self.new.clone())
    }

    fn ratio(&self) -> Option<f64> {
        let (old, new) = (self.old_median()?, self.new_median()?);
        (old != 0.0).then(|| new / old)
    }
}

/// The figures of every run lined up by name, in the order they first appear.
fn table(old: &[Vec<Figure>], new: &[Vec<Figure>]) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    for (side, runs) in [(0, old), (1, new)] {
        for figure in runs.iter().flatten() {
            let at = match lines.iter().position(|l| l.name == figure.name) {
                Some(at) => at,
                None => {
                    lines.push(Line {
                        name: figure.name.clone(),
                        better: figure.better,
                        old: Vec::new(),
                        new: Vec::new(),
                    });
                    lines.len() - 1
                }
            };
            if let Some(value) = figure.value {
                let values = if side == 0 {
                    &mut lines[at].old
                } else {
                    &mut lines[at].new
                };
                values.push(value);
            }
        }
    }
    lines
}

/// (max - min) / median of `values` in percent: the noise one binary showed over the rounds;
/// `None` for fewer than two values.
fn spread(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mid = median(values.to_vec())?;
    (mid != 0.0).then(|| (hi - lo) / mid.abs() * 100.0)
}

fn describe(mode: Mode) -> String {
    match mode {
        Mode::Inserts => "inserts".into(),
        Mode::Backup(mib) => format!("--backup-db-mib {mib}"),
        Mode::Restore(mib) => format!("--restore-db-mib {mib}"),
        Mode::BackupWal(mib) => format!("--backup-wal-db-mib {mib}"),
        Mode::Archive => "--archive".into(),
        Mode::Incremental => "--incremental".into(),
    }
}

fn print(
    args: &BenchArgs,
    mode: Mode,
    old: &Path,
    new: &Path,
    lines: &[Line],
) -> anyhow::Result<()> {
    let rounds = args.compare_rounds;
    if args.json {
        let figures: Vec<_> = lines
            .iter()
            .map(|l| {
                json!({
                    "figure": l.name,
                    "better": l.better.word(),
                    "old": l.old_median().map(round2),
                    "new": l.new_median().map(round2),
                    "new_over_old": l.ratio().map(|r| (r * 1000.0).round() / 1000.0),
                    "old_runs": l.old.iter().copied().map(round2).collect::<Vec<_>>(),
                    "new_runs": l.new.iter().copied().map(round2).collect::<Vec<_>>(),
                })
            })
            .collect();
        let doc = json!({
            "raftlite_bench_version": VERSION,
            "cores": cores(),
            "measurement": describe(mode),
            "old_bin": old.display().to_string(),
            "new_bin": new.display().to_string(),
            "rounds": rounds,
            "figures": figures,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "raftlite-bench {VERSION} compare, {} cores: {}, {rounds} round(s) per binary, \
         alternating (old first in odd rounds, new first in even ones){}",
        cores(),
        describe(mode),
        if rounds > 1 {
            "; medians, spread = (max - min) / median"
        } else {
            ""
        }
    );
    println!("old: {}", old.display());
    println!("new: {}", new.display());
    println!();
    let width = lines
        .iter()
        .map(|l| l.name.len())
        .chain([6])
        .max()
        .unwrap_or(6);
    // Sub-second times keep a third decimal.
    let value = |x: Option<f64>| match x {
        None => "-".to_owned(),
        Some(v) if v.abs() < 1.0 => format!("{v:.3}"),
        Some(v) => format!("{v:.2}"),
    };
    let pct = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.1}%"));
    let mut header = format!(
        "{:<width$} {:>12} {:>12} {:>8}  {:<6}",
        "figure", "old", "new", "new/old", "better"
    );
    if rounds > 1 {
        header.push_str(&format!(" {:>10} {:>10}", "old spread", "new spread"));
    }
    println!("{}", header.trim_end());
    for l in lines {
        let mut line = format!(
            "{:<width$} {:>12} {:>12} {:>8}  {:<6}",
            l.name,
            value(l.old_median()),
            value(l.new_median()),
            l.ratio().map_or("-".to_owned(), |r| format!("{r:.3}x")),
            l.better.word(),
        );
        if rounds > 1 {
            line.push_str(&format!(
                " {:>10} {:>10}",
                pct(spread(&l.old)),
                pct(spread(&l.new))
            ));
        }
        println!("{}", line.trim_end());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_line_up_by_name_with_medians_and_ratios() {
        let run = |a: f64, b: Option<f64>| {
            vec![
                Figure::higher("1-node, 1 clients: inserts/s", Some(a)),
                Figure::lower("1-node, 1 clients: p50 ms", b),
            ]
        };
        let old = [
            run(100.0, Some(2.0)),
            run(120.0, None),
            run(110.0, Some(4.0)),
        ];
        let new = [run(121.0, Some(3.0))];
        let lines = table(&old, &new);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].old_median(), Some(110.0));
        assert_eq!(lines[0].new_median(), Some(121.0));
        assert!((lines[0].ratio().unwrap() - 1.1).abs() < 1e-9);
        assert_eq!(lines[0].better, Better::Higher);
        assert_eq!(lines[1].old, vec![2.0, 4.0]);
        assert_eq!(lines[1].old_median(), Some(3.0));
        assert_eq!(lines[1].ratio(), Some(1.0));
        assert_eq!(spread(&lines[0].old).map(|s| s.round()), Some(18.0));
        assert_eq!(spread(&lines[0].new), None);
    }

    #[test]
    fn no_ratio_without_both_sides_or_against_zero() {
        let lines = table(
            &[vec![Figure::lower("x", Some(0.0))]],
            &[vec![
                Figure::lower("x", Some(1.0)),
                Figure::lower("y", Some(1.0)),
            ]],
        );
        assert_eq!(lines[0].ratio(), None);
        assert_eq!(lines[1].old_median(), None);
        assert_eq!(lines[1].ratio(), None);
    }
}
