//! The cohort hash: a specified, stable map from a cohort key to a backend.
//!
//! The pick is weighted rendezvous hashing. For each backend `b` with weight
//! `w_b > 0`:
//!
//! ```text
//! seed_b  = xxh3_64_with_seed(name_b, COHORT_SEED)
//! h_b     = xxh3_64_with_seed(key, seed_b)
//! u_b     = ((h_b >> 11) + 0.5) / 2^53            // uniform in (0, 1)
//! score_b = -ln(u_b) / w_b
//! ```
//!
//! and the key goes to the backend with the smallest score (ties to the
//! earlier backend in name order). The probability of a backend is
//! `w_b / sum(w)`. Raising `w_b` lowers only `score_b`, so cohorts move only
//! *into* `b`; lowering it moves cohorts only *out of* `b`: nobody bounces
//! between the other backends, for any number of backends.
//!
//! `ln` is computed here with IEEE-754 basic operations only (no platform
//! `libm`), which are correctly rounded everywhere, so the pick is the same on
//! every machine and architecture. Test vectors pin it.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The seed of the per-backend seeds (`"SWITCHYD"` in ASCII).
pub const COHORT_SEED: u64 = 0x5357_4954_4348_5944;

/// The per-backend seed derived from its name.
pub fn backend_seed(name: &str) -> u64 {
    xxh3_64_with_seed(name.as_bytes(), COHORT_SEED)
}

/// `-ln(u)` for the key under a backend seed: the unweighted score.
pub fn unweighted_score(key: &[u8], seed: u64) -> f64 {
    let hash = xxh3_64_with_seed(key, seed);
    // 53 random bits, centred in their interval, so u is never 0 or 1.
    let u = ((hash >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
    -ln(u)
}

/// Picks among `(seed, weight)` candidates for `key`; `None` when every
/// weight is 0.
pub fn rendezvous<I>(key: &[u8], candidates: I) -> Option<usize>
where
    I: IntoIterator<Item = (u64, u32)>,
{
    let mut best: Option<(usize, f64)> = None;
    for (index, (seed, weight)) in candidates.into_iter().enumerate() {
        if weight == 0 {
            continue;
        }
        let score = unweighted_score(key, seed) / f64::from(weight);
        if best.is_none_or(|(_, best_score)| score < best_score) {
            best = Some((index, score));
        }
    }
    best.map(|(index, _)| index)
}

/// Natural logarithm of a positive, normal `x`, from basic operations only.
///
/// `x = m * 2^e` with `m` in `[sqrt(1/2), sqrt(2))`, then
/// `ln(m) = 2 * atanh(s)` with `s = (m - 1) / (m + 1)`, `|s| < 0.172`: the odd
/// series `s + s^3/3 + s^5/5 + ...` to the `s^27` term (the next is below
/// 2^-60 of the sum), in Horner form with fixed coefficients so that no
/// division is needed per term.
fn ln(x: f64) -> f64 {
    const MANTISSA_BITS: u64 = (1 << 52) - 1;
    // 1 / (2k + 1) for k = 13 down to 1, as f64 literals (exactly the values
    // the compiler rounds them to on every platform).
    const COEFFICIENTS: [f64; 13] = [
        1.0 / 27.0,
        1.0 / 25.0,
        1.0 / 23.0,
        1.0 / 21.0,
        1.0 / 19.0,
        1.0 / 17.0,
        1.0 / 15.0,
        1.0 / 13.0,
        1.0 / 11.0,
        1.0 / 9.0,
        1.0 / 7.0,
        1.0 / 5.0,
        1.0 / 3.0,
    ];
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & MANTISSA_BITS) | (1023 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        exponent += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut series = 0.0;
    for coefficient in COEFFICIENTS {
        series = series * s2 + coefficient;
    }
    let atanh = s + s * s2 * series;
    2.0 * atanh + exponent as f64 * std::f64::consts::LN_2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_agrees_with_std_to_rounding() {
        for x in [1e-16, 1e-9, 0.001, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999_999, 1.0] {
            let ours = ln(x);
            let std = x.ln();
            assert!(
                (ours - std).abs() <= 4.0 * f64::EPSILON * std.abs().max(1.0),
                "ln({x}) = {ours}, std says {std}"
            );
        }
    }

    /// Pinned vectors: if these change, cohorts move between versions on
    /// upgrade, which must never happen silently.
    #[test]
    fn hash_test_vectors() {
        assert_eq!(backend_seed("blue"), 0x28fa_89d0_cc4a_ca86);
        assert_eq!(backend_seed("green"), 0x56e9_e804_31ed_f5eb);
        let score = unweighted_score(b"user-1", backend_seed("blue"));
        assert!(
            (score - 3.959_052_599_806_009e-1).abs() < 1e-15,
            "{score:e}"
        );
        let pick = |key: &str, w: [u32; 3]| {
            let names = ["blue", "green", "red"];
            rendezvous(
                key.as_bytes(),
                names.iter().zip(w).map(|(n, w)| (backend_seed(n), w)),
            )
        };
        let keys = ["user-1", "user-2", "user-3", "user-4", "alice", "bob"];
        let at = |w: [u32; 3]| keys.map(|k| pick(k, w).unwrap());
        assert_eq!(at([900_000, 100_000, 0]), [0, 0, 0, 0, 0, 1]);
        assert_eq!(at([1, 1, 0]), [0, 1, 0, 0, 1, 1]);
        assert_eq!(at([1, 1, 1]), [0, 2, 0, 2, 2, 1]);
        assert_eq!(pick("user-1", [0, 0, 0]), None);
        assert_eq!(pick("user-1", [0, 5, 0]), Some(1));
    }
}
