//! A small seeded random number generator (xorshift64*), for peer choice and jitter. Not for
//! anything secret. Tests seed it to make runs repeatable.

/// xorshift64*: fast, tiny, and good enough to pick peers and spread timers.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator with a fixed seed (any value; zero is mapped to a non-zero state).
    pub fn seeded(seed: u64) -> Rng {
        // splitmix64 of the seed, so that close seeds give unrelated sequences.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    /// A generator seeded from the OS (or the clock, if the OS gives no random bytes).
    pub fn from_entropy() -> Rng {
        let mut b = [0u8; 8];
        let seed = match getrandom::fill(&mut b) {
            Ok(()) => u64::from_le_bytes(b),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        };
        Rng::seeded(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Up to `k` distinct items of `items`, in random order (a partial Fisher-Yates shuffle).
    pub fn choose<T>(&mut self, mut items: Vec<T>, k: usize) -> Vec<T> {
        let k = k.min(items.len());
        for i in 0..k {
            let j = i + self.below((items.len() - i) as u64) as usize;
            items.swap(i, j);
        }
        items.truncate(k);
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_bounds_hold() {
        let (mut a, mut b) = (Rng::seeded(7), Rng::seeded(7));
        for _ in 0..100 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
        assert_ne!(Rng::seeded(7).next_u64(), Rng::seeded(8).next_u64());
        assert_eq!(Rng::seeded(0).below(0), 0);
    }

    #[test]
    fn choose_picks_distinct_items_and_every_item_eventually() {
        let mut rng = Rng::seeded(1);
        let mut seen = [false; 5];
        for _ in 0..100 {
            let mut picked = rng.choose(vec![0, 1, 2, 3, 4], 2);
            assert_eq!(picked.len(), 2);
            for &p in &picked {
                seen[p] = true;
            }
            picked.dedup();
            assert_eq!(picked.len(), 2);
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(rng.choose(vec![1], 3), vec![1]);
    }
}
