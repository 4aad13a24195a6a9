//! Binned pixel metrics as the FlowCLAS authors compute them (torchmetrics with `thresholds=T`).
//!
//! Thresholds are `t_k = k / (T - 1)`, `k = 0..T`, and a pixel is positive at `t_k` when
//! `score >= t_k`. A score `s` in [0, 1] therefore passes exactly the thresholds
//! `k <= floor(s * (T - 1))`, so one histogram bin per pixel is enough: the positives at `t_k`
//! are the suffix sum of the histogram from `k` on. `s * (T - 1)` is computed in f64, where the
//! product of an f32 and an integer below 2^29 is exact, so the bin is exactly the `>=` rule.
use rayon::prelude::*;

/// Pixels per parallel work item; large enough that zeroing a per-task histogram is noise.
const CHUNK: usize = 1 << 16;

/// Class of a mask value: its offset into a [`FrameScan`] histogram (normal, anomaly, ignored).
#[derive(Clone, Debug)]
pub struct ClassTable {
    offsets: [u32; 256],
}

impl ClassTable {
    /// Maps `anomaly` to the positive block, `ignore` to the dropped block, every other id to normal.
    pub fn new(bins: usize, anomaly: u8, ignore: u8) -> Self {
        let mut offsets = [0u32; 256];
        offsets[anomaly as usize] = bins as u32;
        offsets[ignore as usize] = 2 * bins as u32;
        Self { offsets }
    }
}

/// The bin of a finite score: the number of thresholds it passes, minus one. Scores outside
/// [0, 1] are clipped first (a score below 0 still passes threshold 0).
#[inline(always)]
pub fn bin_of(score: f32, scale: f64) -> usize {
    (score.clamp(0.0, 1.0) as f64 * scale) as usize
}

/// What one pass over a frame found: per-class histograms and the frame's health counts.
#[derive(Clone, Debug)]
pub struct FrameScan {
    /// `3 * bins` counts: normal pixels, anomalous pixels, ignored pixels.
    pub hist: Vec<u32>,
    /// Pixels whose score is NaN or infinite (left out of everything).
    pub non_finite: u64,
    /// Finite scores outside [0, 1] (clipped into the first or last bin).
    pub clipped: u64,
    /// Largest finite score of the map (the frame score); NaN when it has none.
    pub max: f32,
}

impl FrameScan {
    fn empty(bins: usize) -> Self {
        Self {
            hist: vec![0; 3 * bins],
            non_finite: 0,
            clipped: 0,
            max: f32::NAN,
        }
    }

    /// Anomalous pixels with a finite score in this frame.
    pub fn positives(&self) -> u64 {
        let bins = self.hist.len() / 3;
        self.hist[bins..2 * bins]
            .iter()
            .map(|&c| u64::from(c))
            .sum()
    }

    fn merge(mut self, other: Self) -> Self {
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            *a += b;
        }
        self.non_finite += other.non_finite;
        self.clipped += other.clipped;
        self.max = self.max.max(other.max); // f32::max ignores a NaN side
        self
    }

    fn add(&mut self, scores: &[f32], mask: &[u8], classes: &ClassTable, scale: f64) {
        let mut clipped = 0u64;
        let mut max = f32::NEG_INFINITY;
        let mut any = false;
        for (&s, &m) in scores.iter().zip(mask) {
            if !s.is_finite() {
                self.non_finite += 1;
                continue;
            }
            any = true;
            clipped += u64::from(!(0.0..=1.0).contains(&s));
            max = max.max(s);
            let idx = classes.offsets[m as usize] as usize + bin_of(s, scale);
            self.hist[idx] += 1;
        }
        self.clipped += clipped;
        if any {
            self.max = self.max.max(max);
        }
    }
}

/// Histograms one frame in parallel (rayon over chunks of pixels, one histogram per task).
/// `scores` and `mask` have the same length (checked by the caller).
pub fn scan_frame(scores: &[f32], mask: &[u8], bins: usize, classes: &ClassTable) -> FrameScan {
    let scale = (bins - 1) as f64;
    scores
        .par_chunks(CHUNK)
        .zip(mask.par_chunks(CHUNK))
        .fold(
            || FrameScan::empty(bins),
            |mut scan, (s, m)| {
                scan.add(s, m, classes, scale);
                scan
            },
        )
        .reduce(|| FrameScan::empty(bins), FrameScan::merge)
}

/// Cumulative pixel counts of a whole split: `pos[b]`, `neg[b]` = anomalous / normal pixels in bin `b`.
#[derive(Clone, Debug)]
pub struct Histogram {
    /// Anomalous pixels per bin.
    pub pos: Vec<u64>,
    /// Normal pixels per bin.
    pub neg: Vec<u64>,
    /// Ignored pixels (any bin).
    pub ignored: u64,
}

impl Histogram {
    /// An empty histogram over `bins` thresholds.
    pub fn new(bins: usize) -> Self {
        Self {
            pos: vec![0; bins],
            neg: vec![0; bins],
            ignored: 0,
        }
    }

    /// Adds a frame's counts.
    pub fn add(&mut self, scan: &FrameScan) {
        let bins = self.pos.len();
        let (neg, rest) = scan.hist.split_at(bins);
        let (pos, ignored) = rest.split_at(bins);
        for (a, &b) in self.neg.iter_mut().zip(neg) {
            *a += u64::from(b);
        }
        for (a, &b) in self.pos.iter_mut().zip(pos) {
            *a += u64::from(b);
        }
        self.ignored += ignored.iter().map(|&c| u64::from(c)).sum::<u64>();
    }

    /// Anomalous pixels counted.
    pub fn positives(&self) -> u64 {
        self.pos.iter().sum()
    }

    /// Normal pixels counted.
    pub fn negatives(&self) -> u64 {
        self.neg.iter().sum()
    }

    /// Per-threshold rates; `None` when the split has no anomalous or no normal pixel.
    pub fn curves(&self) -> Option<Curves> {
        let (p, n) = (self.positives(), self.negatives());
        if p == 0 || n == 0 {
            return None;
        }
        let bins = self.pos.len();
        let (tp, fp) = (suffix_sums(&self.pos), suffix_sums(&self.neg));
        let thresholds = (0..bins).map(|k| k as f64 / (bins - 1) as f64).collect();
        let tpr = tp.iter().map(|&c| c as f64 / p as f64).collect();
        let fpr = fp.iter().map(|&c| c as f64 / n as f64).collect();
        // torchmetrics' _safe_divide: precision 0 where nothing is predicted positive.
        let precision = tp
            .iter()
            .zip(&fp)
            .map(|(&t, &f)| {
                if t + f == 0 {
                    0.0
                } else {
                    t as f64 / (t + f) as f64
                }
            })
            .collect();
        Some(Curves {
            thresholds,
            tpr,
            fpr,
            precision,
        })
    }
}

/// `out[k] = sum(counts[k..])`.
pub fn suffix_sums(counts: &[u64]) -> Vec<u64> {
    let mut out = vec![0; counts.len()];
    let mut acc = 0;
    for (o, &c) in out.iter_mut().zip(counts).rev() {
        acc += c;
        *o = acc;
    }
    out
}

/// Rates at each threshold `t_k` (index `k`, thresholds ascending). Recall is `tpr`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Curves {
    /// `t_k = k / (T - 1)`.
    pub thresholds: Vec<f64>,
    /// Anomalous pixels with score >= t_k over all anomalous pixels (also the recall).
    pub tpr: Vec<f64>,
    /// Normal pixels with score >= t_k over all normal pixels.
    pub fpr: Vec<f64>,
    /// Anomalous over all pixels with score >= t_k; 0 where none is.
    pub precision: Vec<f64>,
}

impl Curves {
    /// AUROC: trapezoid of TPR over FPR, points taken by ascending FPR (ties by descending
    /// threshold), no end points added — torchmetrics' binned ROC with `auc(reorder=True)`.
    pub fn auroc(&self) -> f64 {
        // FPR is non-increasing in k, so descending k is already the stable sort by FPR.
        let pts: Vec<(f64, f64)> = (0..self.fpr.len())
            .rev()
            .map(|k| (self.fpr[k], self.tpr[k]))
            .collect();
        trapezoid(&pts)
    }

    /// AP: trapezoid of precision over recall after appending (recall 0, precision 1), points
    /// stably sorted by recall from threshold-ascending order — torchmetrics' binned PR curve
    /// with `auc(reorder=True)`. Within equal recall the lowest threshold comes first.
    pub fn average_precision(&self) -> f64 {
        let mut pts: Vec<(f64, f64)> = self
            .tpr
            .iter()
            .zip(&self.precision)
            .map(|(&r, &p)| (r, p))
            .chain(std::iter::once((0.0, 1.0)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0)); // stable
        trapezoid(&pts)
    }

    /// The highest threshold index whose TPR is still >= `min_tpr` (TPR is non-increasing in
    /// k, so this is also where FPR is smallest among those thresholds); `None` if none is.
    pub fn operating_index(&self, min_tpr: f64) -> Option<usize> {
        self.tpr.iter().rposition(|&t| t >= min_tpr)
    }

    /// Smallest FPR among thresholds with TPR >= `min_tpr`; 1.0 when there is none.
    pub fn fpr_at_tpr(&self, min_tpr: f64) -> f64 {
        self.operating_index(min_tpr).map_or(1.0, |k| self.fpr[k])
    }
}

/// Trapezoid area under a polyline given as (x, y) points in order of non-decreasing x.
pub fn trapezoid(points: &[(f64, f64)]) -> f64 {
    points
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_is_the_number_of_thresholds_passed_minus_one() {
        let scale = 4.0; // T = 5: thresholds 0, .25, .5, .75, 1
        assert_eq!(bin_of(0.0, scale), 0);
        assert_eq!(bin_of(0.2499, scale), 0);
        assert_eq!(bin_of(0.25, scale), 1);
        assert_eq!(bin_of(0.99, scale), 3);
        assert_eq!(bin_of(1.0, scale), 4);
        assert_eq!(bin_of(7.0, scale), 4);
        assert_eq!(bin_of(-3.0, scale), 0);
    }

    #[test]
    fn bin_matches_ge_on_every_threshold_of_a_fine_grid() {
        let bins = 5000;
        let scale = (bins - 1) as f64;
        for i in 0..=20_000u32 {
            let s = i as f32 / 20_000.0;
            let b = bin_of(s, scale);
            // s >= k/(T-1) exactly when s*(T-1) >= k in exact arithmetic.
            assert!(s as f64 * scale >= b as f64);
            assert!(b == bins - 1 || (s as f64 * scale) < (b + 1) as f64);
        }
    }

    #[test]
    fn scan_counts_classes_non_finite_and_clipped() {
        let classes = ClassTable::new(5, 9, 255);
        let scores = [0.1, 0.9, f32::NAN, 1.5, -0.2, 0.5, f32::INFINITY];
        let mask = [0, 9, 9, 9, 0, 255, 0];
        let scan = scan_frame(&scores, &mask, 5, &classes);
        assert_eq!(scan.non_finite, 2);
        assert_eq!(scan.clipped, 2);
        assert_eq!(scan.max, 1.5);
        let mut h = Histogram::new(5);
        h.add(&scan);
        assert_eq!(h.neg, [2, 0, 0, 0, 0]);
        assert_eq!(h.pos, [0, 0, 0, 1, 1]);
        assert_eq!(h.ignored, 1);
    }

    #[test]
    fn perfect_separation_on_two_bins() {
        let mut h = Histogram::new(11);
        h.neg[2] = 100;
        h.pos[8] = 10;
        let c = h.curves().unwrap();
        assert!((c.auroc() - 1.0).abs() < 1e-12);
        // The authors' tie order joins (recall 0, precision 1) to the lowest threshold of the
        // recall-1 run, where precision is the prevalence 10/110: AP = (1 + 1/11) / 2, not 1.
        // With continuous scores that run is one bin wide and AP tends to the exact value.
        assert!((c.average_precision() - (1.0 + 1.0 / 11.0) / 2.0).abs() < 1e-12);
        assert_eq!(c.fpr_at_tpr(0.95), 0.0);
        assert_eq!(c.operating_index(0.95), Some(8));
    }

    #[test]
    fn no_positive_pixels_means_no_curves() {
        let mut h = Histogram::new(11);
        h.neg[2] = 100;
        assert!(h.curves().is_none());
    }
}
