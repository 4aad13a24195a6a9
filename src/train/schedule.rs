//! Learning rate: linear warm-up over the first 30% of steps, then cosine decay to 0 (spec §4).

/// Fraction of the steps spent warming up.
pub const WARMUP_FRACTION: f64 = 0.3;

/// Learning rate at `step` (0-based) of `total` steps for a peak of `base`.
pub fn learning_rate(step: usize, total: usize, base: f64) -> f64 {
    let total = total.max(1);
    let warmup = ((total as f64 * WARMUP_FRACTION).ceil() as usize).max(1);
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let decay = (total - warmup).max(1);
    let progress = ((step - warmup) as f64 / decay as f64).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_linearly_then_decays_by_cosine() {
        let lr = |s| learning_rate(s, 100, 1.0);
        assert!((lr(0) - 1.0 / 30.0).abs() < 1e-12);
        assert!((lr(14) - 0.5).abs() < 1e-12);
        assert!((lr(29) - 1.0).abs() < 1e-12);
        assert!((lr(30) - 1.0).abs() < 1e-12);
        assert!((lr(65) - 0.5).abs() < 1e-12);
        assert!(lr(99) < 0.01 && lr(99) > 0.0);
        assert!((1..100).all(|s| s >= 30 || lr(s) > lr(s - 1)));
        assert!((31..100).all(|s| lr(s) < lr(s - 1)));
    }
}
