//! A small deterministic random source (SplitMix64), so a run's draws
//! follow from its printed seed alone and need no extra dependency. Each
//! task gets its own stream ([`Rng::fork`]): the faults drawn do not depend
//! on how the load tasks interleave.

/// SplitMix64: 64 bits of state, good enough spread for drawing faults.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A stream that starts from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }

    /// An index drawn by weight.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut draw = self.range(0, total.saturating_sub(1));
        for (index, weight) in weights.iter().enumerate() {
            if draw < u64::from(*weight) {
                return index;
            }
            draw -= u64::from(*weight);
        }
        weights.len() - 1
    }

    /// An independent stream for another task, drawn from this one.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_numbers() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let drawn: Vec<u64> = (0..100).map(|_| a.range(3, 9)).collect();
        assert_eq!(drawn, (0..100).map(|_| b.range(3, 9)).collect::<Vec<_>>());
        assert!(drawn.iter().all(|n| (3..=9).contains(n)));
        assert!(drawn.contains(&3) && drawn.contains(&9));
        let mut c = Rng::new(43);
        assert_ne!(drawn, (0..100).map(|_| c.range(3, 9)).collect::<Vec<_>>());
    }

    #[test]
    fn weights_are_followed() {
        let mut rng = Rng::new(7);
        let mut counts = [0u32; 3];
        for _ in 0..10_000 {
            counts[rng.weighted(&[1, 0, 3])] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!(counts[2] > counts[0] * 2, "{counts:?}");
    }
}
