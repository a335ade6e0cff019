//! What a run reports: one [`Row`] per measurement, printed as one table and written to
//! `results.json` as `{"machine": {...}, "benchmarks": [{"name", "custops", "baseline",
//! "unit", "ratio", "goal", "met", "p50_ms", "p99_ms", "params"}]}`, with what the machine was
//! and what else was running on it, since a ratio only means something next to that.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use super::Scale;

/// One measurement against its baseline.
#[derive(Debug, Clone)]
pub struct Row {
    /// The benchmark's name, with a qualifier (`lookup.check.c16`).
    pub name: String,
    /// The suite's figure.
    pub custops: Option<f64>,
    /// The baseline's figure, measured in the same run.
    pub baseline: Option<f64>,
    /// The unit of both figures.
    pub unit: &'static str,
    /// `custops / baseline`.
    pub ratio: Option<f64>,
    /// The goal in words (`ratio >= 0.8`); `None` for figures only reported.
    pub goal: Option<String>,
    /// Whether the goal is met; `None` without a goal.
    pub met: Option<bool>,
    /// Median latency of the suite's calls, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of the suite's calls, ms.
    pub p99_ms: Option<f64>,
    /// How it was measured.
    pub params: Value,
}

impl Row {
    /// A row with figures and the ratio between them, no goal yet.
    pub fn new(name: impl Into<String>, unit: &'static str, custops: f64, baseline: f64) -> Self {
        Self {
            name: name.into(),
            custops: Some(custops),
            baseline: Some(baseline),
            unit,
            ratio: ratio(custops, baseline),
            goal: None,
            met: None,
            p50_ms: None,
            p99_ms: None,
            params: json!({}),
        }
    }

    /// The goal `ratio >= min`.
    pub fn ratio_at_least(mut self, min: f64) -> Self {
        self.goal = Some(format!("ratio >= {min}"));
        self.met = Some(self.ratio.is_some_and(|r| r >= min));
        self
    }

    /// The goal `ratio <= max`.
    pub fn ratio_at_most(mut self, max: f64) -> Self {
        self.goal = Some(format!("ratio <= {max}"));
        self.met = Some(self.ratio.is_some_and(|r| r <= max));
        self
    }

    /// The goal `custops < max` (in the row's unit).
    pub fn custops_below(mut self, max: f64) -> Self {
        self.goal = Some(format!("custops < {max} {}", self.unit));
        self.met = Some(self.custops.is_some_and(|c| c < max));
        self
    }

    /// The suite's latencies.
    pub fn latency(mut self, p50_ms: Option<f64>, p99_ms: Option<f64>) -> Self {
        self.p50_ms = p50_ms;
        self.p99_ms = p99_ms;
        self
    }

    /// How it was measured.
    pub fn params(mut self, params: Value) -> Self {
        self.params = params;
        self
    }

    /// The row as one line of progress.
    pub fn one_line(&self) -> String {
        format!(
            "{}: {} {} vs {} (ratio {}, goal {}, met {})",
            self.name,
            figure(self.custops),
            self.unit,
            figure(self.baseline),
            figure(self.ratio),
            self.goal.as_deref().unwrap_or("-"),
            met(self.met)
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "custops": self.custops,
            "baseline": self.baseline,
            "unit": self.unit,
            "ratio": self.ratio,
            "goal": self.goal,
            "met": self.met,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "params": self.params,
        })
    }
}

/// `a / b`, when `b` is a positive number.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

fn figure(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn millis(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

fn met(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "-",
    }
}

/// The rows as one aligned table.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "name", "custops", "baseline", "unit", "ratio", "goal", "met", "p50 ms", "p99 ms",
    ];
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|row| {
            [
                row.name.clone(),
                figure(row.custops),
                figure(row.baseline),
                row.unit.to_owned(),
                figure(row.ratio),
                row.goal.clone().unwrap_or_else(|| "-".to_owned()),
                met(row.met).to_owned(),
                millis(row.p50_ms),
                millis(row.p99_ms),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            // Names, units and goals read left-aligned, figures right-aligned.
            let left = matches!(i, 0 | 3 | 5 | 6);
            let pad = " ".repeat(width - cell.chars().count());
            if i > 0 {
                text.push_str("  ");
            }
            if left {
                text.push_str(cell);
                text.push_str(&pad);
            } else {
                text.push_str(&pad);
                text.push_str(cell);
            }
        }
        text.trim_end().to_owned()
    };
    let mut text = line(&header.map(str::to_owned));
    for row in &cells {
        text.push('\n');
        text.push_str(&line(row));
    }
    text
}

/// The machine's state at one moment: when, its load, and how busy its CPUs were just before.
#[derive(Debug, Clone)]
pub struct MachineSample {
    date: chrono::DateTime<chrono::Utc>,
    load_average: Option<[f64; 3]>,
    busy_percent: Option<f64>,
}

impl MachineSample {
    /// Samples now, measuring CPU use over the next `interval` (before anything of ours runs,
    /// that is what else runs on the machine).
    pub async fn take(interval: Duration) -> Self {
        let date = chrono::Utc::now();
        let before = cpu_jiffies();
        tokio::time::sleep(interval).await;
        let after = cpu_jiffies();
        let busy_percent = match (before, after) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                Some(100.0 * (busy1 - busy0) as f64 / (total1 - total0) as f64)
            }
            _ => None,
        };
        Self {
            date,
            load_average: load_average(),
            busy_percent,
        }
    }
}

/// Busy and total jiffies of all CPUs (`/proc/stat`).
pub(super) fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle + iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// The first value of `key: value` lines in a `/proc` file.
fn proc_field(file: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
}

/// What the run ran on: CPU, memory, kernel, when, the load before and after, how busy the
/// CPUs were before it started, and which build and commit measured.
pub async fn machine(before: &MachineSample, scale: &Scale) -> Value {
    let after = MachineSample::take(Duration::ZERO).await;
    let cpus = super::cores();
    let memory_mib = proc_field("/proc/meminfo", "MemTotal")
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|k| k.trim().to_owned());
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    json!({
        "cpu_model": proc_field("/proc/cpuinfo", "model name"),
        "cpus": cpus,
        "memory_mib": memory_mib,
        "kernel": kernel,
        "date": before.date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "finished": after.date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "load_average_start": before.load_average,
        "load_average_end": after.load_average,
        "cpu_busy_before_start_percent": before.busy_percent.map(|p| (p * 10.0).round() / 10.0),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "commit": commit,
        "scale": if scale.quick { "quick" } else { "full" },
    })
}

/// The machine in one line, above the table.
pub fn machine_line(machine: &Value) -> String {
    let text = |key: &str| machine[key].as_str().unwrap_or("?").to_owned();
    let load = |key: &str| {
        machine[key].as_array().map_or_else(
            || "?".to_owned(),
            |l| {
                l.iter()
                    .filter_map(Value::as_f64)
                    .map(|v| format!("{v:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        )
    };
    format!(
        "{} ({} build, {}), {} x {}, {} MiB, Linux {}; load average {} at the start, {} at the \
         end; CPUs {}% busy just before the start",
        text("date"),
        text("build"),
        text("scale"),
        machine["cpus"],
        text("cpu_model"),
        machine["memory_mib"],
        text("kernel"),
        load("load_average_start"),
        load("load_average_end"),
        machine["cpu_busy_before_start_percent"],
    )
}

/// Writes `results.json`.
pub fn write_json(path: &Path, machine: &Value, rows: &[Row]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("Failed to create {}", dir.display()))?;
    }
    let results = json!({
        "machine": machine,
        "benchmarks": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&results)?;
    std::fs::write(path, text + "\n").with_context(|| format!("Failed to write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_decide_met() {
        let row = Row::new("x", "calls/s", 80.0, 100.0).ratio_at_least(0.8);
        assert_eq!((row.ratio, row.met), (Some(0.8), Some(true)));
        let row = Row::new("x", "ms", 3.0, 1.0).ratio_at_most(2.0);
        assert_eq!(row.met, Some(false));
        let row = Row::new("x", "MiB", 49.0, 20.0).custops_below(50.0);
        assert_eq!(row.met, Some(true));
        let row = Row::new("x", "calls/s", 5.0, 0.0).ratio_at_least(0.8);
        assert_eq!((row.ratio, row.met), (None, Some(false)));
    }

    #[test]
    fn the_table_aligns_and_shows_missing_figures() {
        let rows = [
            Row::new("lookup.check.c16", "calls/s", 11000.4, 15000.0).ratio_at_least(0.8),
            Row::new("memory.after_lookups", "MiB", 31.24, 9.5),
        ];
        let table = table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("name "), "{table}");
        assert!(
            lines[1].contains("11000") && lines[1].contains("NO"),
            "{table}"
        );
        assert!(
            lines[2].contains("31.2") && lines[2].contains(" - "),
            "{table}"
        );
    }
}
