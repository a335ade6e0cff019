//! `custops bench --quick` runs every benchmark end to end (child processes, load, report) at
//! tiny scale, so the harness cannot rot between the runs that produce real figures. It checks
//! that every benchmark ran and reported numbers, not what the numbers are: a debug build on a
//! shared machine says nothing about performance.

use std::process::Command;
use std::time::Instant;

use custops_suite::bench::{BENCHMARKS, Scale, row_names};
use custops_testkit::admin_database_url;

#[test]
fn the_quick_bench_runs_every_benchmark_and_writes_the_results() -> anyhow::Result<()> {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-quick-{}", std::process::id()));
    let started = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_custops"));
    command
        .args(["bench", "--quick", "--out"])
        .arg(&out)
        .env("DATABASE_URL", admin_database_url());
    // The test's Redis when the environment has one (make test always does); without it the
    // services run with their in-process cache alone, which the bench reports.
    if let Ok(redis) = std::env::var("REDIS_URL") {
        command.env("REDIS_URL", redis);
    }
    let output = command.output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "custops bench --quick failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    eprintln!("custops bench --quick took {:?}", started.elapsed());

    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json"))?)?;
    let machine = &results["machine"];
    assert!(machine["cpus"].as_u64().is_some_and(|n| n > 0), "{machine}");
    assert!(machine["date"].is_string(), "{machine}");
    assert_eq!(machine["scale"], "quick");
    let rows = results["benchmarks"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no benchmarks array in {results}"))?;
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();

    // Every row the quick scale plans, in order, and every benchmark among them.
    assert_eq!(names, row_names(&Scale::quick()), "{stdout}");
    for (benchmark, _) in BENCHMARKS {
        assert!(
            names
                .iter()
                .any(|n| n == benchmark || n.starts_with(&format!("{benchmark}."))),
            "{benchmark} missing from {names:?}"
        );
    }
    for row in rows {
        for field in ["custops", "baseline", "ratio"] {
            assert!(row[field].is_f64(), "{field} of {row}");
        }
        assert!(row["unit"].is_string(), "{row}");
        assert!(row["params"].is_object(), "{row}");
        // A row with a goal says whether it met it.
        assert_eq!(row["goal"].is_string(), row["met"].is_boolean(), "{row}");
        assert!(
            stdout.lines().any(
                |line| line
                    .split_whitespace()
                    .next()
                    .is_some_and(|first| Some(first) == row["name"].as_str())
            ),
            "{} not in the table:\n{stdout}",
            row["name"]
        );
    }
    for latency_row in names.iter().filter(|n| n.starts_with("lookup.")) {
        let row = rows
            .iter()
            .find(|r| r["name"] == *latency_row)
            .ok_or_else(|| anyhow::anyhow!("{latency_row}"))?;
        assert!(row["p99_ms"].is_f64(), "{row}");
    }
    std::fs::remove_dir_all(&out).ok();
    Ok(())
}
