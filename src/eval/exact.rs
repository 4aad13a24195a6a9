//! Exact, sort-based metrics with scikit-learn's definitions: `roc_auc_score` (ties as one
//! step), `average_precision_score` (step-wise, no interpolation) and FPR@95 read from the full
//! `roc_curve(drop_intermediate=False)`. Memory grows with the number of samples, so this is
//! for small sets, for frame scores, and for checking the binned metrics.
use rayon::prelude::*;

use super::binned::trapezoid;

/// Cumulative counts at each distinct score, scores descending: `tps[i]`, `fps[i]` = positives
/// and negatives with score >= the i-th largest distinct score.
#[derive(Clone, Debug, PartialEq)]
pub struct StepCurve {
    /// True positives at each distinct threshold.
    pub tps: Vec<u64>,
    /// False positives at each distinct threshold.
    pub fps: Vec<u64>,
}

impl StepCurve {
    /// Sorts `(score, is_positive)` samples (in place) and accumulates them; scores must be
    /// finite (the caller drops NaN and infinities).
    pub fn new(samples: &mut [(f32, bool)]) -> Self {
        samples.par_sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let (mut tps, mut fps) = (Vec::new(), Vec::new());
        let (mut tp, mut fp) = (0u64, 0u64);
        for (i, &(score, positive)) in samples.iter().enumerate() {
            if positive {
                tp += 1;
            } else {
                fp += 1;
            }
            // Close a step at the last sample of each run of equal scores.
            if samples.get(i + 1).is_none_or(|next| next.0 != score) {
                tps.push(tp);
                fps.push(fp);
            }
        }
        Self { tps, fps }
    }

    fn totals(&self) -> Option<(f64, f64)> {
        let p = *self.tps.last()? as f64;
        let n = *self.fps.last()? as f64;
        (p > 0.0 && n > 0.0).then_some((p, n))
    }

    /// Area under the ROC curve from (0, 0) through every step; `None` without both classes.
    pub fn auroc(&self) -> Option<f64> {
        let (p, n) = self.totals()?;
        let pts: Vec<(f64, f64)> = std::iter::once((0.0, 0.0))
            .chain(
                self.fps
                    .iter()
                    .zip(&self.tps)
                    .map(|(&f, &t)| (f as f64 / n, t as f64 / p)),
            )
            .collect();
        Some(trapezoid(&pts))
    }

    /// Step-wise average precision: sum of (recall_i - recall_{i-1}) * precision_i.
    pub fn average_precision(&self) -> Option<f64> {
        let (p, _) = self.totals()?;
        let mut prev_recall = 0.0;
        let mut ap = 0.0;
        for (&t, &f) in self.tps.iter().zip(&self.fps) {
            let recall = t as f64 / p;
            ap += (recall - prev_recall) * t as f64 / (t + f) as f64;
            prev_recall = recall;
        }
        Some(ap)
    }

    /// Smallest FPR among ROC points with TPR >= `min_tpr` (1.0 if none).
    pub fn fpr_at_tpr(&self, min_tpr: f64) -> Option<f64> {
        let (p, n) = self.totals()?;
        // FPR grows along the steps, so the first qualifying step has the smallest.
        Some(
            self.tps
                .iter()
                .position(|&t| t as f64 / p >= min_tpr)
                .map_or(1.0, |i| self.fps[i] as f64 / n),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(samples: &[(f32, bool)]) -> StepCurve {
        StepCurve::new(&mut samples.to_vec())
    }

    #[test]
    fn ties_are_one_step_and_count_half() {
        // One positive tied with one negative, one clean positive: AUROC = (1 + 0.5) / 2.
        let c = curve(&[(0.5, true), (0.5, false), (0.9, true)]);
        assert_eq!(c.tps, [1, 2]);
        assert_eq!(c.fps, [0, 1]);
        assert!((c.auroc().unwrap() - 0.75).abs() < 1e-12);
        // AP = 0.5 * 1 + 0.5 * 2/3.
        assert!((c.average_precision().unwrap() - (0.5 + 1.0 / 3.0)).abs() < 1e-12);
        assert_eq!(c.fpr_at_tpr(0.95), Some(1.0));
    }

    #[test]
    fn inverted_detector_scores_zero() {
        let c = curve(&[(0.1, true), (0.2, true), (0.8, false), (0.9, false)]);
        assert_eq!(c.auroc(), Some(0.0));
        assert_eq!(c.fpr_at_tpr(0.95), Some(1.0));
    }

    #[test]
    fn one_class_is_undefined() {
        let c = curve(&[(0.1, false), (0.2, false)]);
        assert_eq!(c.auroc(), None);
        assert_eq!(c.average_precision(), None);
    }
}
