//! Fast, stable hashing for picks: FNV-1a with a 64-bit finaliser, and Jump Consistent Hash
//! (Lamping & Veach, 2014), which moves only 1/n of keys when the bucket count grows to n.

/// A stable 64-bit hash (FNV-1a, then the splitmix64 finaliser for avalanche).
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bucket in `0..buckets` for `key`; `buckets` must be at least 1.
pub fn jump(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_is_balanced_and_moves_about_one_nth() {
        let keys: Vec<u64> = (0..20_000u64).map(mix).collect();
        let mut counts = [0u32; 10];
        for k in &keys {
            counts[jump(*k, 10) as usize] += 1;
        }
        assert!(
            counts.iter().all(|c| (1700..2300).contains(c)),
            "{counts:?}"
        );
        let moved = keys
            .iter()
            .filter(|k| jump(**k, 10) != jump(**k, 11))
            .count();
        let share = moved as f64 / keys.len() as f64;
        assert!(
            (0.07..0.12).contains(&share),
            "growing 10 -> 11 moved {share}"
        );
        assert_eq!(hash64(b"abc"), hash64(b"abc"));
        assert_ne!(hash64(b"abc"), hash64(b"abd"));
    }
}
