//! What a run counts: faults and load by kind, figures checked, violations
//! by invariant (each with a few examples), notes for the run's log, and
//! errors of the harness itself (kept apart from the server's violations).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

/// Examples kept per invariant.
const EXAMPLES: usize = 5;

/// Every invariant checked at the end of a run, by its name in the summary.
pub const INVARIANTS: &[&str] = &[
    "wrong_user",
    "version_not_increasing",
    "import_not_final",
    "client_state_differs",
    "import_ran_twice_at_once",
    "webhook_missing",
    "webhook_out_of_order",
    "webhook_failed",
    "webhook_bad_signature",
    "server_panic",
    "node_not_ready",
];

/// A run's figures, shared by its tasks.
pub struct Record {
    started: Instant,
    counts: Mutex<BTreeMap<String, u64>>,
    violations: Mutex<BTreeMap<&'static str, (u64, Vec<String>)>>,
    notes: Mutex<Vec<String>>,
    harness: Mutex<Vec<String>>,
}

impl Default for Record {
    fn default() -> Record {
        Record {
            started: Instant::now(),
            counts: Mutex::default(),
            violations: Mutex::new(
                INVARIANTS
                    .iter()
                    .map(|name| (*name, (0, Vec::new())))
                    .collect(),
            ),
            notes: Mutex::default(),
            harness: Mutex::default(),
        }
    }
}

impl Record {
    /// Adds `n` to the counter `name`.
    pub fn count(&self, name: &str, n: u64) {
        *self
            .counts
            .lock()
            .expect("lock")
            .entry(name.to_string())
            .or_default() += n;
    }

    /// One violation of `invariant`, with what shows it.
    pub fn violation(&self, invariant: &'static str, example: String) {
        let mut violations = self.violations.lock().expect("lock");
        let entry = violations.entry(invariant).or_default();
        entry.0 += 1;
        if entry.1.len() < EXAMPLES {
            entry.1.push(example);
        }
    }

    /// A line for the run's log, stamped with the run's clock.
    pub fn note(&self, line: String) {
        let at = self.started.elapsed().as_secs_f64();
        let line = format!("[{at:7.2}s] {line}");
        eprintln!("  {line}");
        self.notes.lock().expect("lock").push(line);
    }

    /// Something the harness itself got wrong (not a server violation).
    pub fn harness_error(&self, error: String) {
        self.note(format!("HARNESS ERROR: {error}"));
        self.harness.lock().expect("lock").push(error);
    }

    /// The run's log lines.
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().expect("lock").clone()
    }

    /// The summary: counters split by prefix, violations with examples.
    pub fn summary(&self) -> serde_json::Value {
        let counts = self.counts.lock().expect("lock").clone();
        let mut faults = serde_json::Map::new();
        let mut checked = serde_json::Map::new();
        let mut load = serde_json::Map::new();
        for (name, n) in counts {
            if let Some(kind) = name.strip_prefix("fault.") {
                faults.insert(kind.to_string(), n.into());
            } else if let Some(what) = name.strip_prefix("checked.") {
                checked.insert(what.to_string(), n.into());
            } else {
                load.insert(name, n.into());
            }
        }
        let violations = self.violations.lock().expect("lock");
        let counts: serde_json::Map<String, serde_json::Value> = violations
            .iter()
            .map(|(name, (n, _))| (name.to_string(), (*n).into()))
            .collect();
        let examples: serde_json::Map<String, serde_json::Value> = violations
            .iter()
            .filter(|(_, (n, _))| *n > 0)
            .map(|(name, (_, examples))| (name.to_string(), examples.clone().into()))
            .collect();
        serde_json::json!({
            "faults": faults,
            "checked": checked,
            "load": load,
            "violations": counts,
            "violation_total": violations.values().map(|(n, _)| n).sum::<u64>(),
            "examples": examples,
            "harness_errors": self.harness.lock().expect("lock").clone(),
        })
    }
}
