//! Maglev lookup tables (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI 2016, §3.4): each backend fills table slots in the order of its own
//! permutation, so a key maps to a slot by hash and a slot to a backend. The table is built
//! in `update`; lookups in `pick` are one hash and one index.

use crate::hash::{hash64, mix};

/// The paper's default table size (a prime); use a prime over 100x the backend count.
pub const DEFAULT_SIZE: usize = 65_537;

/// Primes to size tables from: the first one at least 100x the backend count (as the paper
/// advises) is used, up to [`DEFAULT_SIZE`] and beyond for very large sets.
const PRIMES: [usize; 9] = [
    4_093, 8_191, 16_381, 32_749, 65_537, 131_071, 262_139, 524_287, 1_048_573,
];

/// A table size for `backends` backends: a prime at least 100 times larger (min 4,093, a
/// 16 KiB table; below that, disruption on a change grows noticeably).
pub fn size_for(backends: usize) -> usize {
    let want = backends.saturating_mul(100);
    PRIMES
        .iter()
        .copied()
        .find(|p| *p >= want)
        .unwrap_or(PRIMES[PRIMES.len() - 1])
}

/// Whether `n` is prime (table sizes must be).
pub fn is_prime(n: usize) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// A built lookup table from slots to backend ids.
#[derive(Clone, Debug, Default)]
pub struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// Builds the table for backends named by stable byte strings (e.g. "ip:port"), each
    /// with the id to return. `size` must be prime and at least the backend count.
    pub fn new<'a>(backends: impl IntoIterator<Item = (u32, &'a [u8])>, size: usize) -> Self {
        let backends: Vec<(u32, u64, u64)> = backends
            .into_iter()
            .map(|(id, name)| {
                let h = hash64(name);
                let offset = h % size as u64;
                let skip = mix(h ^ 0x9e37_79b9_7f4a_7c15) % (size as u64 - 1) + 1;
                (id, offset, skip)
            })
            .collect();
        if backends.is_empty() || size < backends.len() {
            return Maglev::default();
        }
        const EMPTY: u32 = u32::MAX;
        let mut table = vec![EMPTY; size];
        let mut next = vec![0u64; backends.len()];
        let mut filled = 0;
        'fill: loop {
            for (i, (_, offset, skip)) in backends.iter().enumerate() {
                let mut c = ((offset + next[i] * skip) % size as u64) as usize;
                while table[c] != EMPTY {
                    next[i] += 1;
                    c = ((offset + next[i] * skip) % size as u64) as usize;
                }
                table[c] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
        }
        Maglev {
            table: table.into_iter().map(|i| backends[i as usize].0).collect(),
        }
    }

    /// The backend id for a key's hash, or `None` for an empty table.
    pub fn get(&self, key_hash: u64) -> Option<u32> {
        (!self.table.is_empty()).then(|| self.table[(key_hash % self.table.len() as u64) as usize])
    }

    /// Table slots (0 when there are no backends).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table has no backends.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(n: u32, skip: Option<u32>) -> Maglev {
        let names: Vec<(u32, String)> = (0..n)
            .filter(|i| Some(*i) != skip)
            .map(|i| (i, format!("10.0.0.{i}:8080")))
            .collect();
        Maglev::new(names.iter().map(|(i, s)| (*i, s.as_bytes())), DEFAULT_SIZE)
    }

    #[test]
    fn balanced_and_minimally_disruptive() {
        let full = build(10, None);
        let mut per = [0usize; 10];
        for slot in 0..full.len() as u64 {
            per[full.get(slot).unwrap() as usize] += 1;
        }
        let ideal = full.len() / 10;
        assert!(
            per.iter().all(|c| c.abs_diff(ideal) < ideal / 50),
            "within 2% of even: {per:?}"
        );

        // One endpoint of 10 leaves: keys of the other nine should mostly stay put.
        let less = build(10, Some(3));
        let keys: Vec<u64> = (0..100_000u64).map(mix).collect();
        let moved = keys
            .iter()
            .filter(|k| full.get(**k) != less.get(**k))
            .count();
        let moved_from_survivors = keys
            .iter()
            .filter(|k| full.get(**k) != Some(3) && full.get(**k) != less.get(**k))
            .count();
        let share = moved as f64 / keys.len() as f64;
        let extra = moved_from_survivors as f64 / keys.len() as f64;
        eprintln!(
            "maglev: one of 10 endpoints leaving moved {:.2}% of keys ({:.2}% beyond the leaver's own 10%)",
            share * 100.0,
            extra * 100.0
        );
        assert!(share < 0.13, "moved {share}");
        assert!(extra < 0.03, "survivors' keys moved {extra}");
        assert!(
            Maglev::new(std::iter::empty::<(u32, &[u8])>(), DEFAULT_SIZE)
                .get(1)
                .is_none()
        );
    }
}
