//! Integer hashing and value noise: the per-pixel randomness of textures, stars and glints.
//!
//! Textures must be a pure function of the surface point (so a frame renders the same whatever
//! the thread order), which rules out a stateful RNG here; a SplitMix64-style finaliser over
//! quantised coordinates is stateless, fast and identical on every platform.
use nalgebra::{Point3, Vector3};

/// SplitMix64's output function: a bijective, well-mixing 64-bit hash.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Hashes a list of words in order (a seed tree: `derive(seed, &[split, index])`).
pub fn derive(seed: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(mix(seed), |h, &p| mix(h ^ p))
}

/// Hash of an integer lattice cell, salted (one mix of a linear combination with large odd
/// multipliers: the inner loop of every texture, so cheaper than [`derive`]).
pub fn cell(i: i64, j: i64, k: i64, salt: u64) -> u64 {
    mix((i as u64)
        .wrapping_mul(0x8CB9_2BA7_2F3D_8DD7)
        .wrapping_add((j as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93))
        .wrapping_add((k as u64).wrapping_mul(0xA076_1D64_78BD_642F))
        ^ salt)
}

/// Maps a hash to a uniform number in [0, 1).
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Smooth value noise in [0, 1) on a unit lattice (trilinear with a smoothstep fade).
pub fn value(p: &Point3<f64>, salt: u64) -> f64 {
    let base = p.map(f64::floor);
    let f = p - base;
    let s = f.map(|t| t * t * (3.0 - 2.0 * t));
    let (i, j, k) = (base.x as i64, base.y as i64, base.z as i64);
    let corner = |di: i64, dj: i64, dk: i64| unit(cell(i + di, j + dj, k + dk, salt));
    let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
    let x00 = lerp(corner(0, 0, 0), corner(1, 0, 0), s.x);
    let x10 = lerp(corner(0, 1, 0), corner(1, 1, 0), s.x);
    let x01 = lerp(corner(0, 0, 1), corner(1, 0, 1), s.x);
    let x11 = lerp(corner(0, 1, 1), corner(1, 1, 1), s.x);
    lerp(lerp(x00, x10, s.y), lerp(x01, x11, s.y), s.z)
}

/// Fractal sum of `octaves` value-noise layers, each at twice the frequency and half the weight;
/// normalised to [0, 1).
pub fn fbm(p: &Point3<f64>, octaves: u32, salt: u64) -> f64 {
    let (mut sum, mut weight, mut total, mut q) = (0.0, 1.0, 0.0, *p);
    for o in 0..octaves {
        sum += weight * value(&q, salt.wrapping_add(o as u64));
        total += weight;
        weight *= 0.5;
        q = Point3::from(q.coords * 2.0 + Vector3::new(17.3, -5.1, 9.7));
    }
    sum / total
}

/// A pseudo-random unit-ish vector with components in [-1, 1) from a hash.
pub fn jitter(h: u64) -> Vector3<f64> {
    Vector3::new(
        unit(mix(h)) * 2.0 - 1.0,
        unit(mix(h ^ 1)) * 2.0 - 1.0,
        unit(mix(h ^ 2)) * 2.0 - 1.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_in_range_and_spread() {
        let xs: Vec<f64> = (0..1000).map(|i| unit(mix(i))).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.05, "mean {mean}");
    }

    #[test]
    fn value_noise_is_continuous_and_bounded() {
        let p = Point3::new(1.3, 2.7, -0.4);
        let q = Point3::new(1.3001, 2.7, -0.4);
        assert!((value(&p, 7) - value(&q, 7)).abs() < 1e-2);
        for i in 0..200 {
            let x = fbm(&Point3::new(i as f64 * 0.37, 1.0, 2.0), 4, 3);
            assert!((0.0..1.0).contains(&x));
        }
    }
}
