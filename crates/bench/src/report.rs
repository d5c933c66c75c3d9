//! Reports: one run as JSON plus a readable table, and `summarize`, which
//! takes many runs' JSON and prints the medians and reeltime/baseline ratios.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One run of one scenario against one server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub label: String,
    pub params: Value,
    /// Flat numbers, the ones `summarize` compares.
    pub metrics: BTreeMap<String, f64>,
    pub details: Value,
}

pub fn emit(report: &Report, json_stdout: bool, out: Option<&Path>) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&json!({
        "scenario": report.scenario,
        "label": report.label,
        "finished_at": chrono::Utc::now().to_rfc3339(),
        "params": report.params,
        "metrics": report.metrics,
        "details": report.details,
    }))?;
    if let Some(path) = out {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    let table = table(report);
    if json_stdout {
        eprint!("{table}");
        println!("{text}");
    } else {
        print!("{table}");
    }
    let _ = std::io::stdout().flush();
    Ok(())
}

fn table(report: &Report) -> String {
    let mut out = format!("\n{} against {}\n", report.scenario, report.label);
    let width = report.metrics.keys().map(String::len).max().unwrap_or(10);
    out.push_str(&format!("  {:-<width$}-+-{:-<14}\n", "", ""));
    for (name, value) in &report.metrics {
        out.push_str(&format!("  {name:<width$} | {:>14}\n", number(*value)));
    }
    if let Some(errors) = report.details.get("errors").and_then(Value::as_object)
        && !errors.is_empty()
    {
        out.push_str("  errors:\n");
        for (message, count) in errors {
            out.push_str(&format!("    {count} x {message}\n"));
        }
    }
    if let Some(nodes) = report.details.get("nodes").and_then(Value::as_array)
        && !nodes.is_empty()
    {
        out.push_str("  per node:\n");
        for node in nodes {
            out.push_str(&format!("    {}\n", node_line(node)));
        }
    }
    if let Some(errors) = report
        .details
        .pointer("/fanout/details/errors")
        .and_then(Value::as_object)
        && !errors.is_empty()
    {
        out.push_str("  fan-out errors:\n");
        for (message, count) in errors {
            out.push_str(&format!("    {count} x {message}\n"));
        }
    }
    if let Some(error) = report.details.get("fanout_error").and_then(Value::as_str) {
        out.push_str(&format!("  fan-out failed: {error}\n"));
    }
    out
}

/// One node of a cluster run on one line, from the fields present
/// (`sockets` and the per-socket figure only when `--server-pid` was given
/// in `--url` order).
fn node_line(node: &Value) -> String {
    let num = |key: &str| node.get(key).and_then(Value::as_f64);
    let mut line = format!(
        "node {} (pid {})",
        num("node").map(number).unwrap_or_default(),
        num("pid").map(number).unwrap_or_default()
    );
    if let Some(url) = node.get("url").and_then(Value::as_str) {
        line.push_str(&format!(" {url}"));
    }
    line.push(':');
    let mut parts = Vec::new();
    if let Some(sockets) = num("sockets") {
        parts.push(format!("{} sockets", number(sockets)));
    }
    if let Some(dropped) = num("dropped") {
        parts.push(format!("{} dropped", number(dropped)));
    }
    if let (Some(before), Some(after)) = (num("rss_before_mib"), num("rss_after_mib")) {
        parts.push(format!("RSS {} -> {} MiB", number(before), number(after)));
    }
    if let Some(per_socket) = num("rss_per_socket_kib") {
        parts.push(format!("{} KiB/socket", number(per_socket)));
    }
    if let Some(cpu) = num("cpu_secs") {
        parts.push(format!("CPU {} s", number(cpu)));
    }
    if let Some(fds) = num("fds") {
        parts.push(format!("{} fds", number(fds)));
    }
    format!("{line} {}", parts.join(", "))
}

fn number(value: f64) -> String {
    if value == 0.0 {
        "0".into()
    } else if value.abs() >= 1000.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

#[derive(Debug, clap::Args)]
pub struct SummarizeArgs {
    /// Result files, or directories holding them (*.json, searched one level deep).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The label measured (numerator of the ratio).
    #[arg(long, default_value = "reeltime")]
    pub label: String,
    /// The labels compared against (denominators), each a column: repeat it or give a comma
    /// list (e.g. `baseline,socketio`). Labels without any run are left out.
    #[arg(long, default_value = "baseline", value_delimiter = ',')]
    pub baseline: Vec<String>,
    /// Also write the summary as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print a Markdown table instead of plain text.
    #[arg(long)]
    pub markdown: bool,
}

/// Whether more of a metric is better, worse, or just a count to show.
fn better(metric: &str) -> Option<bool> {
    if metric.ends_with("per_sec") || metric.ends_with("per_sec_steady") {
        Some(true)
    } else if metric.ends_with("_ms")
        || metric.contains("rss_per_socket")
        || metric.contains("cpu_us_per")
    {
        Some(false)
    } else {
        None
    }
}

/// The metrics the summary shows, per scenario, in order.
fn shown(scenario: &str) -> &'static [&'static str] {
    match scenario {
        "connect" => &[
            "connects_per_sec",
            "connect_p50_ms",
            "connect_p99_ms",
            "server_cpu_us_per_connect",
            "sockets_connected",
            "connect_failures",
        ],
        "hold" => &[
            "sockets_connected",
            "rss_per_socket_kib",
            "server_rss_after_mib",
            "connects_per_sec",
            "sockets_dropped",
            "connect_failures",
        ],
        "fanout" => &[
            "msgs_per_sec",
            "msgs_per_sec_steady",
            "latency_p50_ms",
            "latency_p99_ms",
            "latency_max_ms",
            "server_cpu_us_per_msg",
            "messages",
            "wrong_user",
            "lost",
            "drained",
            "unfinished",
            "out_of_order",
        ],
        "churn" => &[
            "msgs_per_sec",
            "latency_p50_ms",
            "latency_p99_ms",
            "latency_max_ms",
            "reconnects_per_sec",
            "refreshes_per_sec",
            "reconnect_p99_ms",
            "refresh_p99_ms",
            "wrong_user",
            "lost",
            "drained",
            "churn_failures",
        ],
        // Reconnect storms over several nodes (`scripts/bench storm`).
        "storm" => &[
            "sockets_connected",
            "kill_dropped",
            "kill_not_back",
            "kill_back_50pct_secs",
            "kill_back_99pct_secs",
            "kill_back_100pct_secs",
            "kill_server_cpu_us_per_reconnect",
            "kill_postgres_cpu_secs",
            "kill_pg_xact_commit",
            "kill_finals_lost",
            "restart_dropped",
            "restart_not_back",
            "restart_back_50pct_secs",
            "restart_back_99pct_secs",
            "restart_back_100pct_secs",
            "restart_server_cpu_us_per_reconnect",
            "restart_postgres_cpu_secs",
            "restart_pg_xact_commit",
            "restart_pg_tup_returned",
            "restart_peak_fds_max_node",
            "restart_finals_lost",
        ],
        // `hold` over several nodes with a fan-out while held
        // (`scripts/bench cluster`).
        "cluster" => &[
            "nodes",
            "sockets_connected",
            "sockets_dropped",
            "connect_failures",
            "connects_per_sec",
            "connect_p99_ms",
            "rss_per_socket_kib",
            "rss_per_socket_kib_node_min",
            "rss_per_socket_kib_node_max",
            "server_rss_after_mib",
            "redis_rss_mib",
            "postgres_rss_mib",
            "postgres_pss_mib",
            "fanout_msgs_per_sec",
            "fanout_msgs_per_sec_steady",
            "fanout_latency_p50_ms",
            "fanout_latency_p99_ms",
            "fanout_latency_max_ms",
            "fanout_messages",
            "fanout_wrong_user",
            "fanout_lost",
            "fanout_out_of_order",
            "fanout_drained",
            "fanout_unfinished",
            "fanout_failed",
        ],
        _ => &[],
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn collect(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            for entry in
                std::fs::read_dir(input).with_context(|| format!("reading {}", input.display()))?
            {
                let path = entry?.path();
                if path.extension().is_some_and(|ext| ext == "json") {
                    files.push(path);
                }
            }
        } else {
            files.push(input.clone());
        }
    }
    files.sort();
    Ok(files)
}

/// `summarize`: medians per (scenario, label, metric) and the ratios.
pub fn summarize(args: SummarizeArgs) -> anyhow::Result<()> {
    // scenario (with its size tag) -> label -> metric -> values
    type Runs = BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f64>>>>;
    let mut runs: Runs = BTreeMap::new();
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for file in collect(&args.inputs)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let (Some(scenario), Some(label), Some(metrics)) = (
            value.get("scenario").and_then(Value::as_str),
            value.get("label").and_then(Value::as_str),
            value.get("metrics").and_then(Value::as_object),
        ) else {
            continue;
        };
        // A run may carry a case name (e.g. fanout-10k) in params.case.
        let case = value
            .pointer("/params/case")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| scenario.to_string());
        *counts.entry((case.clone(), label.to_string())).or_default() += 1;
        let slot = runs
            .entry(case)
            .or_default()
            .entry(label.to_string())
            .or_default();
        for (metric, number) in metrics {
            if let Some(number) = number.as_f64() {
                slot.entry(metric.clone()).or_default().push(number);
            }
        }
    }

    // The compared labels that have runs; the first stays the one of the
    // `ratio` and `advantage` fields, the others get `advantage_<label>`.
    let mut baselines: Vec<&String> = args
        .baseline
        .iter()
        .filter(|label| counts.keys().any(|(_, l)| l == *label))
        .collect();
    if baselines.is_empty()
        && let Some(first) = args.baseline.first()
    {
        baselines.push(first);
    }
    let mut rows = Vec::new();
    for (case, labels) in &runs {
        let scenario = case.split('-').next().unwrap_or(case);
        let empty = BTreeMap::new();
        let mine = labels.get(&args.label).unwrap_or(&empty);
        for metric in shown(scenario) {
            let a = mine.get(*metric).and_then(|v| median(&mut v.clone()));
            let theirs: Vec<Option<f64>> = baselines
                .iter()
                .map(|label| {
                    labels
                        .get(*label)
                        .and_then(|metrics| metrics.get(*metric))
                        .and_then(|v| median(&mut v.clone()))
                })
                .collect();
            if a.is_none() && theirs.iter().all(Option::is_none) {
                continue;
            }
            let advantage = |b: Option<f64>| match (better(metric), a, b) {
                (Some(true), Some(a), Some(b)) if b > 0.0 => Some(a / b),
                (Some(false), Some(a), Some(b)) if a > 0.0 => Some(b / a),
                _ => None,
            };
            let b = theirs[0];
            let ratio = match (a, b) {
                (Some(a), Some(b)) if b != 0.0 => Some(a / b),
                _ => None,
            };
            let mut row = json!({
                "case": case,
                "metric": metric,
                args.label.clone(): a,
                "ratio": ratio,
                "advantage": advantage(b),
            });
            let mut runs = vec![
                counts
                    .get(&(case.clone(), args.label.clone()))
                    .copied()
                    .unwrap_or(0),
            ];
            if let Some(object) = row.as_object_mut() {
                for (i, (label, value)) in baselines.iter().zip(&theirs).enumerate() {
                    object.insert((*label).clone(), json!(value));
                    if i > 0 {
                        object.insert(format!("advantage_{label}"), json!(advantage(*value)));
                    }
                    runs.push(
                        counts
                            .get(&(case.clone(), (*label).clone()))
                            .copied()
                            .unwrap_or(0),
                    );
                }
                object.insert("runs".into(), json!(runs));
            }
            rows.push(row);
        }
    }

    let cell = |value: &Value| value.as_f64().map(number).unwrap_or_else(|| "-".into());
    let times = |value: &Value| {
        value
            .as_f64()
            .map(|x| format!("{}x", number(x)))
            .unwrap_or_else(|| "-".into())
    };
    let first = baselines[0];
    let mut headers = vec![
        "case".to_string(),
        "metric".to_string(),
        format!("{} (median)", args.label),
    ];
    headers.extend(baselines.iter().map(|label| format!("{label} (median)")));
    headers.push(format!("{}/{first}", args.label));
    headers.push(if baselines.len() > 1 {
        format!("advantage vs {first}")
    } else {
        "advantage".to_string()
    });
    headers.extend(
        baselines
            .iter()
            .skip(1)
            .map(|label| format!("advantage vs {label}")),
    );
    headers.push("runs".to_string());
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut line = vec![
                row["case"].as_str().unwrap_or("").to_string(),
                row["metric"].as_str().unwrap_or("").to_string(),
                cell(&row[&args.label]),
            ];
            line.extend(baselines.iter().map(|label| cell(&row[label.as_str()])));
            line.push(cell(&row["ratio"]));
            line.push(times(&row["advantage"]));
            line.extend(
                baselines
                    .iter()
                    .skip(1)
                    .map(|label| times(&row[format!("advantage_{label}").as_str()])),
            );
            let runs: Vec<String> = row["runs"]
                .as_array()
                .map(|runs| runs.iter().map(|n| n.to_string()).collect())
                .unwrap_or_default();
            line.push(runs.join("+"));
            line
        })
        .collect();
    if args.markdown {
        println!("| {} |", headers.join(" | "));
        println!("|{}", " --- |".repeat(headers.len()));
        for line in &lines {
            println!("| {} |", line.join(" | "));
        }
    } else {
        let widths: Vec<usize> = (0..headers.len())
            .map(|i| {
                lines
                    .iter()
                    .map(|line| line[i].len())
                    .chain([headers[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let render = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (cell, width))| {
                    if i < 2 {
                        format!("{cell:<width$}")
                    } else {
                        format!("{cell:>width$}")
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        println!("{}", render(&headers));
        println!(
            "{}",
            "-".repeat(widths.iter().sum::<usize>() + 2 * widths.len())
        );
        for line in &lines {
            println!("{}", render(line));
        }
    }
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_directions() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
        assert_eq!(better("connects_per_sec"), Some(true));
        assert_eq!(better("latency_p99_ms"), Some(false));
        assert_eq!(better("rss_per_socket_kib"), Some(false));
        assert_eq!(better("lost"), None);
    }

    #[test]
    fn summary_has_a_column_per_compared_server() {
        let dir =
            std::env::temp_dir().join(format!("reeltime-bench-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let runs = [
            ("reeltime", 1, 200.0),
            ("reeltime", 2, 100.0),
            ("baseline", 1, 2000.0),
            ("socketio", 1, 1000.0),
            ("socketio", 2, 1400.0),
        ];
        for (label, run, cpu) in runs {
            let report = json!({
                "scenario": "connect",
                "label": label,
                "params": {"case": "connect"},
                "metrics": {"server_cpu_us_per_connect": cpu},
            });
            std::fs::write(
                dir.join(format!("connect-{label}-{run}.json")),
                report.to_string(),
            )
            .unwrap();
        }
        let out = dir.join("summary.out");
        summarize(SummarizeArgs {
            inputs: vec![dir.clone()],
            label: "reeltime".into(),
            baseline: vec!["baseline".into(), "socketio".into(), "absent".into()],
            out: Some(out.clone()),
            markdown: true,
        })
        .unwrap();
        let rows: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row["reeltime"], 150.0);
        assert_eq!(row["baseline"], 2000.0);
        assert_eq!(row["socketio"], 1200.0);
        assert_eq!(row["advantage"], 2000.0 / 150.0);
        assert_eq!(row["advantage_socketio"], 8.0);
        assert!(row.get("absent").is_none());
        assert_eq!(row["runs"], json!([2, 1, 2]));
        let _ = std::fs::remove_dir_all(dir);
    }
}
