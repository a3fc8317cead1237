//! Small helpers every report shares: units, rounding, medians, the machine.

/// The version printed in every report's header.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The machine's cores, as the reports give them (0 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// `x` to two decimals, for JSON.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `x` with `digits` decimals, or `-` when unknown.
pub fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
}

pub fn mib_of(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn mib_of_kib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_no_runs() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }
}
