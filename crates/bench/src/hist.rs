//! A small log-linear histogram of microsecond values: exact below 1024 µs,
//! then 512 buckets per power of two (0.2 % relative precision). Cheap to
//! record into, mergeable across worker processes, and serialized sparsely.

use serde::{Deserialize, Serialize};

const EXACT: u64 = 1024;
const SUB_BITS: u32 = 9;
const SUB: u64 = 1 << SUB_BITS;
/// Enough buckets for values up to 2^50 µs (35 years).
const BUCKETS: usize = EXACT as usize + 41 * SUB as usize;

#[derive(Debug, Clone)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

fn index_of(value: u64) -> usize {
    if value < EXACT {
        return value as usize;
    }
    let log = 63 - value.leading_zeros(); // >= 10
    let shift = log - SUB_BITS;
    let top = value >> shift; // in [SUB, 2 * SUB)
    let index = EXACT + u64::from(log - 10) * SUB + (top - SUB);
    (index as usize).min(BUCKETS - 1)
}

/// The middle of the bucket at `index`.
fn value_of(index: usize) -> u64 {
    let index = index as u64;
    if index < EXACT {
        return index;
    }
    let rest = index - EXACT;
    let log = rest / SUB + 10;
    let top = rest % SUB + SUB;
    let shift = log - u64::from(SUB_BITS);
    (top << shift) + ((1u64 << shift) >> 1)
}

impl Hist {
    pub fn record(&mut self, micros: u64) {
        self.counts[index_of(micros)] += 1;
        self.total += 1;
        self.sum += u128::from(micros);
        self.min = self.min.min(micros);
        self.max = self.max.max(micros);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn merge(&mut self, other: &Hist) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1), in microseconds; the exact maximum
    /// for q = 1.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        if q >= 1.0 {
            return self.max;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return value_of(index).clamp(self.min, self.max);
            }
        }
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// p50/p90/p99/p99.9/max in milliseconds, for reports.
    pub fn summary(&self) -> Summary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Summary {
            count: self.count(),
            mean_ms: self.mean() / 1000.0,
            p50_ms: ms(self.quantile(0.50)),
            p90_ms: ms(self.quantile(0.90)),
            p99_ms: ms(self.quantile(0.99)),
            p999_ms: ms(self.quantile(0.999)),
            max_ms: ms(self.max),
        }
    }

    pub fn to_wire(&self) -> WireHist {
        WireHist {
            buckets: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, count)| **count > 0)
                .map(|(index, count)| (index as u32, *count))
                .collect(),
            sum: self.sum.min(u128::from(u64::MAX)) as u64,
            min: self.min,
            max: self.max,
        }
    }

    pub fn from_wire(wire: &WireHist) -> Hist {
        let mut hist = Hist::default();
        for (index, count) in &wire.buckets {
            if let Some(slot) = hist.counts.get_mut(*index as usize) {
                *slot += count;
                hist.total += count;
            }
        }
        hist.sum = u128::from(wire.sum);
        hist.min = wire.min;
        hist.max = wire.max;
        hist
    }
}

/// A histogram as it travels from a worker to the coordinator.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WireHist {
    pub buckets: Vec<(u32, u64)>,
    pub sum: u64,
    pub min: u64,
    pub max: u64,
}

/// What the reports show of a latency distribution.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_below_1024_and_close_above() {
        for value in [0, 1, 500, 1023] {
            assert_eq!(value_of(index_of(value)), value);
        }
        for value in [1024u64, 1500, 25_000, 3_000_000, 7_777_777_777] {
            let back = value_of(index_of(value));
            let error = (back as f64 - value as f64).abs() / value as f64;
            assert!(error < 0.002, "{value} -> {back}");
        }
    }

    #[test]
    fn quantiles_and_merge() {
        let mut a = Hist::default();
        let mut b = Hist::default();
        for value in 1..=500 {
            a.record(value);
        }
        for value in 501..=1000 {
            b.record(value);
        }
        a.merge(&Hist::from_wire(&b.to_wire()));
        assert_eq!(a.count(), 1000);
        assert_eq!(a.quantile(0.5), 500);
        assert_eq!(a.quantile(0.99), 990);
        assert_eq!(a.quantile(1.0), 1000);
        assert!((a.mean() - 500.5).abs() < 1e-9);
    }
}
