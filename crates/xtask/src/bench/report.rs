//! Printing: the machine, the command to reproduce, medians and ratios against targets;
//! and the rows every bench returns ([`Row`]), kept in `target/bench/bench.{json,md}`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

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

/// Whether a target bounds the ratio switchyard / baseline or switchyard's own figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum On {
    Ratio,
    Value,
}

/// The comparison a target asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "<=")]
    AtMost,
    #[serde(rename = "<")]
    Below,
}

/// What a figure should reach: `≥ 0.9×` (of the baseline), `≤ 7 µs/row`, `< 300 ns/event`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub on: On,
    pub op: Op,
    pub bound: f64,
    /// The unit of a value target ("" for a ratio).
    pub unit: String,
}

impl Target {
    pub fn ratio(op: Op, bound: f64) -> Self {
        Self {
            on: On::Ratio,
            op,
            bound,
            unit: String::new(),
        }
    }

    pub fn value(op: Op, bound: f64, unit: &str) -> Self {
        Self {
            on: On::Value,
            op,
            bound,
            unit: unit.to_owned(),
        }
    }

    /// Whether `x` (the ratio or the value, as the target says) meets it.
    pub fn holds(&self, x: f64) -> bool {
        match self.op {
            Op::AtLeast => x >= self.bound,
            Op::AtMost => x <= self.bound,
            Op::Below => x < self.bound,
        }
    }

    /// `≥ 0.9×`, `≤ 150 MiB`.
    pub fn text(&self) -> String {
        let op = match self.op {
            Op::AtLeast => "≥",
            Op::AtMost => "≤",
            Op::Below => "<",
        };
        match self.on {
            On::Ratio => format!("{op} {}×", self.bound),
            On::Value => format!("{op} {} {}", self.bound, self.unit),
        }
    }
}

/// A row's verdict: its target met or not, no target, or the bench could not measure it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Verdict {
    Pass,
    Below,
    NoTarget,
    Error(String),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Pass => f.write_str("PASS"),
            Verdict::Below => f.write_str("BELOW"),
            Verdict::NoTarget => f.write_str("—"),
            Verdict::Error(why) => write!(f, "ERROR: {why}"),
        }
    }
}

impl From<Verdict> for String {
    fn from(v: Verdict) -> String {
        v.to_string()
    }
}

impl TryFrom<String> for Verdict {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "PASS" => Ok(Verdict::Pass),
            "BELOW" => Ok(Verdict::Below),
            "—" => Ok(Verdict::NoTarget),
            _ => match s.strip_prefix("ERROR: ") {
                Some(why) => Ok(Verdict::Error(why.to_owned())),
                None => Err(format!("not a verdict: {s:?}")),
            },
        }
    }
}

/// One figure of one bench, next to its baseline, with its target and verdict, and where
/// and when it was measured. Every bench's `run` returns its rows; `bench all` collects
/// them into `target/bench/bench.{json,md}` ([`record`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub benchmark: String,
    pub metric: String,
    /// The baseline's name ("" when the figure has none).
    pub baseline: String,
    pub baseline_value: Option<f64>,
    pub switchyard_value: Option<f64>,
    /// switchyard / baseline.
    pub ratio: Option<f64>,
    pub target: Option<Target>,
    /// The target as printed (`≥ 0.9×`), "" when none.
    pub target_text: String,
    pub verdict: Verdict,
    /// switchyard's CPU time (utime + stime) in the measurement.
    pub cpu_seconds: Option<f64>,
    /// … per event (request, row, message) of the measurement.
    pub cpu_us_per_event: Option<f64>,
    /// switchyard's peak RSS (VmHWM) in the measurement.
    pub peak_rss_mib: Option<f64>,
    /// What else the figure needs to be read right ("medians of 3 rounds", "p50 2.1 ms").
    pub note: String,
    /// 1-minute load average of the machine before and after the bench ran.
    pub load_before: Option<f64>,
    pub load_after: Option<f64>,
    pub cores: usize,
    /// `git describe`-like: the short commit, `-dirty` when the tree had changes.
    pub commit: String,
    /// When the bench finished, UTC (`2026-05-01T10:22:05Z`).
    pub date: String,
}

/// `Some(x)` for a finite `x`: NaN and infinities are not figures.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl Row {
    /// A figure of `benchmark`; set the rest with the builder methods.
    pub fn new(benchmark: &str, metric: &str) -> Self {
        Self {
            benchmark: benchmark.to_owned(),
            metric: metric.to_owned(),
            baseline: String::new(),
            baseline_value: None,
            switchyard_value: None,
            ratio: None,
            target: None,
            target_text: String::new(),
            verdict: Verdict::NoTarget,
            cpu_seconds: None,
            cpu_us_per_event: None,
            peak_rss_mib: None,
            note: String::new(),
            load_before: None,
            load_after: None,
            cores: 0,
            commit: String::new(),
            date: String::new(),
        }
    }

    /// A figure the bench could not measure, and why.
    pub fn error(benchmark: &str, metric: &str, why: &str) -> Self {
        let mut r = Self::new(benchmark, metric);
        r.verdict = Verdict::Error(why.to_owned());
        r
    }

    pub fn baseline(mut self, name: &str, value: f64) -> Self {
        self.baseline = name.to_owned();
        self.baseline_value = finite(value);
        self.judge()
    }

    pub fn value(mut self, value: f64) -> Self {
        self.switchyard_value = finite(value);
        self.judge()
    }

    pub fn target(mut self, target: Target) -> Self {
        self.target_text = target.text();
        self.target = Some(target);
        self.judge()
    }

    /// switchyard's CPU seconds for `events` events (requests, rows, messages).
    pub fn cpu(mut self, seconds: f64, events: f64) -> Self {
        self.cpu_seconds = finite(seconds);
        self.cpu_us_per_event = finite(seconds * 1e6 / events);
        self
    }

    pub fn rss_kib(mut self, kib: u64) -> Self {
        self.peak_rss_mib = finite(kib as f64 / 1024.0).filter(|m| *m > 0.0);
        self
    }

    pub fn rss_mib(mut self, mib: f64) -> Self {
        self.peak_rss_mib = finite(mib);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// The ratio from the two figures, and the verdict from the target. A target whose
    /// figure is missing (not measured, or not finite) has no verdict: "—".
    fn judge(mut self) -> Self {
        if matches!(self.verdict, Verdict::Error(_)) {
            return self;
        }
        self.ratio = match (self.switchyard_value, self.baseline_value) {
            (Some(s), Some(b)) => finite(s / b),
            _ => None,
        };
        self.verdict = match &self.target {
            None => Verdict::NoTarget,
            Some(t) => {
                let x = match t.on {
                    On::Ratio => self.ratio,
                    On::Value => self.switchyard_value,
                };
                match x {
                    Some(x) if t.holds(x) => Verdict::Pass,
                    Some(_) => Verdict::Below,
                    None => Verdict::NoTarget,
                }
            }
        };
        self
    }
}

/// Where and when a bench ran: stamped on each of its rows.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub load_before: Option<f64>,
    pub load_after: Option<f64>,
    pub cores: usize,
    pub commit: String,
    pub date: String,
}

impl RunInfo {
    pub fn stamp(&self, rows: &mut [Row]) {
        for r in rows {
            r.load_before = self.load_before;
            r.load_after = self.load_after;
            r.cores = self.cores;
            r.commit.clone_from(&self.commit);
            r.date.clone_from(&self.date);
        }
    }
}

/// The 1-minute load average (first field of /proc/loadavg).
pub fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
}

/// The workspace's short commit, `-dirty` when tracked files differ from it.
pub fn git_commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
    };
    let Some(out) = git(&["rev-parse", "--short=10", "HEAD"]).filter(|o| o.status.success()) else {
        return "unknown".to_owned();
    };
    let mut commit = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if git(&["diff", "--quiet", "HEAD", "--"]).is_some_and(|o| o.status.code() == Some(1)) {
        commit.push_str("-dirty");
    }
    commit
}

/// Now, UTC, `2026-05-01T10:22:05Z`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_date(secs)
}

/// Seconds since the Unix epoch → `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn utc_date(unix_seconds: u64) -> String {
    let secs = i64::try_from(unix_seconds).unwrap_or(i64::MAX);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The order benches appear in the files, whatever order they ran in.
const BENCH_ORDER: [&str; 5] = ["ingest", "cdc", "kafka", "queue", "plugin"];

/// The rows kept in `bench.json`: the rows of benches that did not run now, then this
/// run's rows (a bench that ran replaces all of its earlier rows), in [`BENCH_ORDER`].
pub fn merge(kept: Vec<Row>, new: &[Row]) -> Vec<Row> {
    let mut rows: Vec<Row> = kept
        .into_iter()
        .filter(|r| !new.iter().any(|n| n.benchmark == r.benchmark))
        .collect();
    rows.extend_from_slice(new);
    let rank = |b: &str| {
        BENCH_ORDER
            .iter()
            .position(|x| *x == b)
            .unwrap_or(BENCH_ORDER.len())
    };
    // Stable: a bench's rows keep their order.
    rows.sort_by_key(|r| rank(&r.benchmark));
    rows
}

/// `{"rows": [...]}`.
pub fn json(rows: &[Row]) -> String {
    let mut text =
        serde_json::to_string_pretty(&serde_json::json!({ "rows": rows })).expect("rows serialise");
    text.push('\n');
    text
}

/// The rows of a `bench.json`.
pub fn parse_json(text: &str) -> anyhow::Result<Vec<Row>> {
    #[derive(Deserialize)]
    struct File {
        rows: Vec<Row>,
    }
    Ok(serde_json::from_str::<File>(text)?.rows)
}

/// 1234567.8 → `1,234,568`; 12.345 → `12.3`; 0.1234 → `0.123`.
pub fn number(x: f64) -> String {
    let a = x.abs();
    if a >= 999.5 {
        let digits = format!("{:.0}", a);
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{}{grouped}", if x < 0.0 { "-" } else { "" })
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map_or_else(|| "—".to_owned(), f)
}

/// The rows as a markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| benchmark | metric | baseline | baseline value | switchyard | ratio | target | verdict \
         | switchyard CPU | peak RSS | load 1m before → after (cores) | commit | date |\n",
    );
    out.push_str("|---|---|---|--:|--:|--:|---|---|--:|--:|---|---|---|\n");
    for r in rows {
        let cpu = match (r.cpu_us_per_event, r.cpu_seconds) {
            (Some(us), Some(s)) => format!("{} µs/event ({} s)", number(us), number(s)),
            (None, Some(s)) => format!("{} s", number(s)),
            _ => "—".to_owned(),
        };
        let load = format!(
            "{} → {} ({})",
            opt(r.load_before, |l| format!("{l:.2}")),
            opt(r.load_after, |l| format!("{l:.2}")),
            r.cores
        );
        let metric = if r.note.is_empty() {
            r.metric.clone()
        } else {
            format!("{} ({})", r.metric, r.note)
        };
        let verdict = match &r.verdict {
            // One line of the cause in the table; bench.json has all of it.
            Verdict::Error(why) => {
                let first = why.lines().next().unwrap_or_default();
                let short: String = first.chars().take(160).collect();
                let more = if short.len() < why.len() { " …" } else { "" };
                format!("ERROR: {short}{more}")
            }
            v => v.to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&r.benchmark),
            cell(&metric),
            cell(if r.baseline.is_empty() {
                "—"
            } else {
                &r.baseline
            }),
            opt(r.baseline_value, number),
            opt(r.switchyard_value, number),
            opt(r.ratio, |x| format!("{x:.2}")),
            cell(if r.target_text.is_empty() {
                "—"
            } else {
                &r.target_text
            }),
            cell(&verdict),
            cpu,
            opt(r.peak_rss_mib, |m| format!("{m:.1} MiB")),
            load,
            cell(&r.commit),
            cell(&r.date),
        );
    }
    out
}

/// Adds `rows` to `dir/bench.json` (replacing the earlier rows of the benches they are
/// from) and rewrites `dir/bench.md` from it; returns every kept row.
pub fn record(dir: &Path, rows: &[Row]) -> anyhow::Result<Vec<Row>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json_path = dir.join("bench.json");
    let kept = match std::fs::read_to_string(&json_path) {
        Ok(text) => parse_json(&text).unwrap_or_else(|e| {
            eprintln!(
                "{} is not a bench file ({e}); starting a new one",
                json_path.display()
            );
            Vec::new()
        }),
        Err(_) => Vec::new(),
    };
    let all = merge(kept, rows);
    std::fs::write(&json_path, json(&all))
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md_path = dir.join("bench.md");
    let md = format!(
        "# switchyard benchmarks\n\nWritten by `cargo xtask bench …` (docs/benchmarks.md \
         says what each row measures). Each bench's rows are from its latest run: see their \
         commit and date.\n\n{}",
        markdown(&all)
    );
    std::fs::write(&md_path, md).with_context(|| format!("writing {}", md_path.display()))?;
    Ok(all)
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

    fn cdc_rows() -> Vec<Row> {
        vec![
            Row::new("cdc", "rows/s")
                .baseline("pg_recvlogical", 200_000.0)
                .value(190_000.0)
                .target(Target::ratio(Op::AtLeast, 0.9))
                .cpu(2.0, 1_000_000.0)
                .rss_kib(40 * 1024),
            Row::new("cdc", "CPU µs/row")
                .baseline("pg_recvlogical", 1.0)
                .value(7.5)
                .target(Target::value(Op::AtMost, 7.0, "µs/row")),
        ]
    }

    #[test]
    fn a_row_computes_its_ratio_and_judges_ratio_targets() {
        let rows = cdc_rows();
        assert_eq!(rows[0].ratio, Some(0.95));
        assert_eq!(rows[0].verdict, Verdict::Pass);
        assert_eq!(rows[0].target_text, "≥ 0.9×");
        assert_eq!(rows[0].cpu_us_per_event, Some(2.0));
        assert_eq!(rows[0].peak_rss_mib, Some(40.0));
        let below = Row::new("kafka", "events/s")
            .baseline("raw", 100.0)
            .value(89.0)
            .target(Target::ratio(Op::AtLeast, 0.9));
        assert_eq!(below.verdict, Verdict::Below);
        // The order of the builder calls does not matter.
        let same = Row::new("kafka", "events/s")
            .target(Target::ratio(Op::AtLeast, 0.9))
            .value(89.0)
            .baseline("raw", 100.0);
        assert_eq!(same, below);
    }

    #[test]
    fn at_most_and_below_targets_judge_the_value_or_the_ratio() {
        let cpu = &cdc_rows()[1];
        assert_eq!(cpu.verdict, Verdict::Below, "7.5 µs/row is over ≤ 7");
        assert_eq!(cpu.target_text, "≤ 7 µs/row");
        let at = |v: f64| {
            Row::new("cdc", "peak RSS MiB")
                .value(v)
                .target(Target::value(Op::AtMost, 150.0, "MiB"))
                .verdict
        };
        assert_eq!(at(150.0), Verdict::Pass, "≤ includes the bound");
        assert_eq!(at(150.1), Verdict::Below);
        let host = |v: f64| {
            Row::new("plugin", "host ns/event")
                .value(v)
                .target(Target::value(Op::Below, 300.0, "ns/event"))
                .verdict
        };
        assert_eq!(host(299.0), Verdict::Pass);
        assert_eq!(host(300.0), Verdict::Below, "< excludes the bound");
        let filter = |v: f64| {
            Row::new("plugin", "filter ns/event")
                .baseline("native", 100.0)
                .value(v)
                .target(Target::ratio(Op::AtMost, 2.0))
        };
        assert_eq!(filter(200.0).verdict, Verdict::Pass);
        assert_eq!(filter(201.0).verdict, Verdict::Below);
        assert_eq!(filter(200.0).target_text, "≤ 2×");
    }

    #[test]
    fn a_missing_figure_has_no_verdict_and_an_error_keeps_its_own() {
        let nan = Row::new("ingest", "req/s")
            .baseline("noop", 0.0)
            .value(10.0)
            .target(Target::ratio(Op::AtLeast, 0.45));
        assert_eq!(nan.ratio, None, "a ratio to zero is no figure");
        assert_eq!(nan.verdict, Verdict::NoTarget);
        let no_target = Row::new("kafka", "events/s")
            .baseline("raw", 2.0)
            .value(1.0);
        assert_eq!(no_target.verdict, Verdict::NoTarget);
        assert_eq!(no_target.ratio, Some(0.5));
        let err = Row::error("queue", "msgs/s", "connecting to nats: refused")
            .target(Target::ratio(Op::AtLeast, 2.0));
        assert_eq!(
            err.verdict.to_string(),
            "ERROR: connecting to nats: refused"
        );
    }

    #[test]
    fn rows_round_trip_through_json() {
        let mut rows = cdc_rows();
        rows.push(Row::error("queue", "msgs/s", "nats: connection refused"));
        RunInfo {
            load_before: Some(1.5),
            load_after: Some(2.25),
            cores: 2,
            commit: "abc1234567".into(),
            date: "2026-05-01T10:22:05Z".into(),
        }
        .stamp(&mut rows);
        let text = json(&rows);
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let first = &v["rows"][0];
        assert_eq!(first["benchmark"], "cdc");
        assert_eq!(first["ratio"], 0.95);
        assert_eq!(first["target"]["op"], ">=");
        assert_eq!(first["target"]["on"], "ratio");
        assert_eq!(first["verdict"], "PASS");
        assert_eq!(first["load_before"], 1.5);
        assert_eq!(first["cores"], 2);
        assert_eq!(v["rows"][1]["verdict"], "BELOW");
        assert_eq!(v["rows"][1]["target"]["op"], "<=");
        assert_eq!(v["rows"][2]["verdict"], "ERROR: nats: connection refused");
        assert_eq!(v["rows"][2]["ratio"], serde_json::Value::Null);
        assert_eq!(parse_json(&text).expect("parses"), rows);
    }

    #[test]
    fn markdown_has_one_line_per_row_with_every_column() {
        let mut rows = cdc_rows();
        rows.push(Row::error(
            "queue",
            "msgs/s",
            "first | line\nsecond line of the cause",
        ));
        RunInfo {
            load_before: Some(1.5),
            load_after: None,
            cores: 2,
            commit: "abc".into(),
            date: "2026-05-01T10:22:05Z".into(),
        }
        .stamp(&mut rows);
        let md = markdown(&rows);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 2 + rows.len(), "{md}");
        let columns = |l: &str| l.matches(" | ").count();
        assert!(
            lines
                .iter()
                .enumerate()
                .all(|(i, l)| i == 1 || columns(l) == 12),
            "{md}"
        );
        assert_eq!(
            lines[2],
            "| cdc | rows/s | pg_recvlogical | 200,000 | 190,000 | 0.95 | ≥ 0.9× | PASS \
             | 2.00 µs/event (2.00 s) | 40.0 MiB | 1.50 → — (2) | abc | 2026-05-01T10:22:05Z |"
        );
        assert!(
            lines[3].contains("| 7.50 | ≤ 7 µs/row | BELOW |"),
            "{}",
            lines[3]
        );
        assert!(
            lines[4].contains("| ERROR: first \\| line … |"),
            "{}",
            lines[4]
        );
    }

    #[test]
    fn a_bench_that_runs_again_replaces_its_rows_and_keeps_the_others() {
        let old = vec![
            Row::new("queue", "msgs/s").value(1.0),
            Row::new("cdc", "rows/s").value(1.0),
            Row::new("cdc", "old figure").value(1.0),
        ];
        let new = cdc_rows();
        let merged = merge(old, &new);
        let names: Vec<(&str, &str)> = merged
            .iter()
            .map(|r| (r.benchmark.as_str(), r.metric.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("cdc", "rows/s"),
                ("cdc", "CPU µs/row"),
                ("queue", "msgs/s")
            ]
        );
    }

    #[test]
    fn record_writes_both_files_and_keeps_earlier_benches() {
        let dir = tempfile::tempdir().expect("a temp dir");
        record(dir.path(), &[Row::new("queue", "msgs/s").value(5.0)]).expect("recorded");
        let all = record(dir.path(), &cdc_rows()).expect("recorded");
        assert_eq!(all.len(), 3);
        let json = std::fs::read_to_string(dir.path().join("bench.json")).expect("json");
        assert_eq!(parse_json(&json).expect("parses"), all);
        let md = std::fs::read_to_string(dir.path().join("bench.md")).expect("md");
        assert!(
            md.contains("| cdc | rows/s |") && md.contains("| queue | msgs/s |"),
            "{md}"
        );
    }

    #[test]
    fn numbers_are_readable() {
        assert_eq!(number(1_234_567.8), "1,234,568");
        assert_eq!(number(123_456.0), "123,456");
        assert_eq!(number(1000.0), "1,000");
        assert_eq!(number(999.6), "1,000");
        assert_eq!(number(150.0), "150");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(7.5), "7.50");
        assert_eq!(number(0.1234), "0.123");
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(951_868_801), "2000-03-01T00:00:01Z");
        assert_eq!(utc_date(1_795_600_800), "2026-11-25T10:00:00Z");
        assert_eq!(utc_date(1_709_164_799), "2024-02-28T23:59:59Z");
        assert_eq!(utc_date(1_709_251_199), "2024-02-29T23:59:59Z");
    }
}
