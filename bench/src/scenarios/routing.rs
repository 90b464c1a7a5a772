//! `routing`: runs the criterion benchmark `server/benches/routing.rs` (route
//! lookup with 10 / 1 000 / 100 000 subscriptions of mixed `*` / `**`
//! patterns) and reports the cost per event and the ratio to 10.

use std::process::Command;

use anyhow::{bail, Context};
use serde_json::json;

use super::Common;
use crate::report::{self, Table};

/// The benchmark routes this many names per iteration.
const NAMES_PER_ITERATION: f64 = 8.0;

pub fn run(common: &Common) -> anyhow::Result<()> {
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace)
        .args([
            "bench",
            "-p",
            "hookyard-server",
            "--bench",
            "routing",
            "--",
            "--noplot",
        ])
        .output()
        .context("run cargo bench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "cargo bench failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let results = parse(&stdout);
    if results.is_empty() {
        bail!("no `route/N time: [...]` lines in the benchmark's output:\n{stdout}");
    }
    let base = results[0].1;
    let mut table = Table::new(&["subscriptions", "per iteration", "per event", "vs 10"]);
    let mut rows = Vec::new();
    for (size, ns) in &results {
        let per_event = ns / NAMES_PER_ITERATION;
        table.row(vec![
            size.to_string(),
            format!("{ns:.0} ns"),
            format!("{per_event:.0} ns"),
            format!("{:.2}×", ns / base),
        ]);
        rows.push(json!({"subscriptions": size, "ns_per_iteration": ns, "ns_per_event": per_event, "ratio_to_first": ns / base}));
    }
    println!(
        "\nrouting (criterion, median; {NAMES_PER_ITERATION} names per iteration, mixed `*` / `**` / literal / tenant routes)\n{}",
        table.render()
    );
    report::write_json(
        &common.json,
        &json!({"scenario": "routing", "results": rows}),
    )?;
    println!("wrote {}", common.json.display());
    Ok(())
}

/// `(size, median ns)` from criterion's `route/SIZE ... time: [lo mid hi]`.
fn parse(output: &str) -> Vec<(u64, f64)> {
    let mut results = Vec::new();
    let mut current: Option<u64> = None;
    for line in output.lines() {
        if let Some(name) = line.split_whitespace().find(|w| w.starts_with("route/")) {
            current = name.trim_start_matches("route/").parse().ok();
        }
        let Some((_, times)) = line.split_once("time:") else {
            continue;
        };
        let words: Vec<&str> = times
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .split_whitespace()
            .collect();
        if let (Some(size), Some(value), Some(unit)) = (current, words.get(2), words.get(3)) {
            if let Ok(value) = value.parse::<f64>() {
                let scale = match *unit {
                    "ps" => 0.001,
                    "ns" => 1.0,
                    "µs" | "us" => 1_000.0,
                    "ms" => 1_000_000.0,
                    _ => 1_000_000_000.0,
                };
                results.push((size, value * scale));
            }
        }
        current = None;
    }
    results
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_criterion_lines() {
        let out = "route/10                time:   [100.00 ns 120.50 ns 130.00 ns]\nroute/100000\n                        time:   [1.0000 µs 1.1000 µs 1.2000 µs]\n";
        assert_eq!(super::parse(out), vec![(10, 120.5), (100000, 1100.0)]);
    }
}
