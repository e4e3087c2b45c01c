//! Printing: the machine, the command to reproduce, medians and ratios against targets.

use std::path::Path;

/// `nproc`, kernel, CPU model and memory, on one line.
pub fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown cpu", |(_, v)| v.trim())
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    format!("nproc {nproc}, linux {kernel}, {cpu}, {mem_gib:.0} GiB RAM")
}

/// The filesystem holding `path` (longest mount point prefix in /proc/mounts).
pub fn filesystem(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, mnt, fs) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mnt)
                .then(|| (mnt.len(), format!("{fs} on {dev} ({mnt})")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown filesystem".to_owned(), |(_, s)| s)
}

/// The command line that reproduces this run, as typed in the workspace root.
pub fn reproduce_command(args: &[String]) -> String {
    let mut cmd = String::new();
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        cmd.push_str(&format!("CARGO_TARGET_DIR={dir} "));
    }
    cmd.push_str("cargo xtask");
    for a in args {
        cmd.push(' ');
        if a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c))
        {
            cmd.push_str(a);
        } else {
            cmd.push_str(&format!("'{}'", a.replace('\'', r"'\''")));
        }
    }
    cmd
}

/// The median of `values` (mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `0.87  target ≥ 0.85  PASS`
pub fn ratio_line(label: &str, ratio: f64, target: f64) -> String {
    let verdict = if ratio >= target { "PASS" } else { "BELOW" };
    format!("{label:<34} {ratio:>6.2}   target ≥ {target:.2}   {verdict}")
}

/// `2.10×  target ≤ 3.00×  PASS` for a figure that should stay at or under its target.
pub fn at_most_line(label: &str, value: f64, target: f64, unit: &str) -> String {
    let verdict = if value <= target { "PASS" } else { "BELOW" };
    format!("{label:<34} {value:>6.2}{unit}   target ≤ {target:.2}{unit}   {verdict}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn ratio_verdicts() {
        assert!(ratio_line("a", 0.85, 0.85).ends_with("PASS"));
        assert!(ratio_line("a", 0.84, 0.85).ends_with("BELOW"));
    }

    #[test]
    fn reproduce_quotes_odd_arguments() {
        let c = reproduce_command(&[
            "bench".into(),
            "ingest".into(),
            "--bin".into(),
            "a b".into(),
        ]);
        assert!(c.ends_with("cargo xtask bench ingest --bin 'a b'"), "{c}");
    }
}
