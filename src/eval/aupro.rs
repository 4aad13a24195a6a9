//! AUPRO: per-region overlap (PRO) against the global false-positive rate, integrated from
//! FPR 0 to a limit (0.3 in the STARS paper) and divided by that limit.
//!
//! Regions are the 8-connected components of each frame's anomaly mask. At threshold `t_k` a
//! region's overlap is the share of its pixels with score >= `t_k`, and PRO(k) is the mean over
//! every region of the split. Because `sum_r overlap_r(k) = sum_r sum_{i in r} [bin_i >= k] / |r|`,
//! each pixel adds `1 / |r|` to a difference array at its bin, and a suffix sum at the end gives
//! the summed overlaps at every threshold: O(pixels) work and O(T) memory, with one
//! connected-component pass per frame, run only on boxes around the rows that hold anomalies.
use image::{GrayImage, Luma};
use imageproc::region_labelling::{connected_components, Connectivity};

use super::binned::{bin_of, trapezoid};

/// Streaming PRO accumulator over a split.
#[derive(Clone, Debug)]
pub struct ProAccumulator {
    /// `diff[b]`: summed `1 / |region|` of region pixels whose bin is `b`.
    diff: Vec<f64>,
    /// Regions seen (with at least one finite score).
    regions: u64,
}

impl ProAccumulator {
    /// An empty accumulator over `bins` thresholds.
    pub fn new(bins: usize) -> Self {
        Self {
            diff: vec![0.0; bins],
            regions: 0,
        }
    }

    /// Regions counted so far.
    pub fn regions(&self) -> u64 {
        self.regions
    }

    /// Adds one frame: `scores` and `mask` are row-major with `width` columns. Non-finite
    /// scores are left out of their region (a region with none left is not counted).
    pub fn add_frame(&mut self, scores: &[f32], mask: &[u8], width: usize, anomaly: u8) {
        for band in bands(mask, width, anomaly) {
            self.add_band(scores, mask, width, anomaly, &band);
        }
    }

    /// Labels one band and adds its regions: every region pixel adds `1 / |region|` at its bin.
    fn add_band(&mut self, scores: &[f32], mask: &[u8], width: usize, anomaly: u8, b: &Band) {
        let (bw, bh) = (b.x1 - b.x0 + 1, b.y1 - b.y0 + 1);
        let rows = || (b.y0..=b.y1).map(|y| y * width + b.x0..y * width + b.x1 + 1);
        let crop = GrayImage::from_fn(bw as u32, bh as u32, |x, y| {
            let at = (b.y0 + y as usize) * width + b.x0 + x as usize;
            Luma([u8::from(mask[at] == anomaly)])
        });
        let labels = connected_components(&crop, Connectivity::Eight, Luma([0u8]));

        let scale = (self.diff.len() - 1) as f64;
        let mut sizes: Vec<u32> = Vec::new();
        let mut members: Vec<(u32, u32)> = Vec::new(); // (label, bin) of scored region pixels
        for (r, labels) in rows().zip(labels.as_raw().chunks_exact(bw)) {
            for (&s, &l) in scores[r].iter().zip(labels) {
                if l != 0 && s.is_finite() {
                    if sizes.len() <= l as usize {
                        sizes.resize(l as usize + 1, 0);
                    }
                    sizes[l as usize] += 1;
                    members.push((l, bin_of(s, scale) as u32));
                }
            }
        }
        for (l, bin) in members {
            self.diff[bin as usize] += 1.0 / f64::from(sizes[l as usize]);
        }
        self.regions += sizes.iter().filter(|&&n| n > 0).count() as u64;
    }

    /// PRO(k) for every threshold index; `None` when no region was seen.
    pub fn pro_curve(&self) -> Option<Vec<f64>> {
        if self.regions == 0 {
            return None;
        }
        let mut pro = vec![0.0; self.diff.len()];
        let mut acc = 0.0;
        for (p, &d) in pro.iter_mut().zip(&self.diff).rev() {
            acc += d;
            *p = acc / self.regions as f64;
        }
        Some(pro)
    }
}

/// Inclusive box of rows `y0..=y1` and columns `x0..=x1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Band {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

/// Boxes around runs of consecutive rows holding `anomaly` pixels. A fully clean row separates
/// runs, so no 8-connected region spans two boxes and each can be labelled on its own; together
/// they are usually far smaller than the frame, or than one box around every anomaly.
fn bands(mask: &[u8], width: usize, anomaly: u8) -> Vec<Band> {
    let mut out: Vec<Band> = Vec::new();
    let mut open = false;
    for (y, row) in mask.chunks_exact(width).enumerate() {
        let Some(first) = row.iter().position(|&m| m == anomaly) else {
            open = false;
            continue;
        };
        let last = row.iter().rposition(|&m| m == anomaly).unwrap_or(first);
        match out.last_mut() {
            Some(b) if open => {
                b.x0 = b.x0.min(first);
                b.x1 = b.x1.max(last);
                b.y1 = y;
            }
            _ => out.push(Band {
                x0: first,
                y0: y,
                x1: last,
                y1: y,
            }),
        }
        open = true;
    }
    out
}

/// Normalised area under the PRO curve up to `max_fpr`.
///
/// `fpr[k]` and `pro[k]` are both non-increasing in the threshold index `k`, so walking `k`
/// from the highest threshold down traces the curve with FPR ascending (ties keep that order,
/// so vertical steps are monotone). The curve starts at (0, 0), the operating point of a
/// threshold above every score. Trapezoids are summed up to the last point with FPR <= `max_fpr`;
/// the PRO at exactly `max_fpr` is linearly interpolated between that point and the next one,
/// closing the area at `max_fpr`. Returns `area / max_fpr`; `None` when the curve never
/// reaches `max_fpr` (cannot happen with scores clipped to [0, 1]: FPR(t = 0) = 1).
pub fn integrate(fpr: &[f64], pro: &[f64], max_fpr: f64) -> Option<f64> {
    let mut pts = vec![(0.0, 0.0)];
    for k in (0..fpr.len()).rev() {
        let (x, y) = (fpr[k], pro[k]);
        if x > max_fpr {
            let &(px, py) = pts.last()?;
            pts.push((max_fpr, py + (y - py) * (max_fpr - px) / (x - px)));
            return Some(trapezoid(&pts) / max_fpr);
        }
        pts.push((x, y));
    }
    let &(last, _) = pts.last()?;
    (last >= max_fpr).then(|| trapezoid(&pts) / max_fpr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_regions_are_one_component_with_eight_connectivity() {
        // Two diagonal pixels (one region under 8-connectivity) and a separate one.
        let mask = [9, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 9];
        let scores = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let mut acc = ProAccumulator::new(3);
        acc.add_frame(&scores, &mask, 4, 9);
        assert_eq!(acc.regions(), 2);
        // t = 1: region A half covered, region B fully -> 0.75.
        let pro = acc.pro_curve().unwrap();
        assert_eq!(pro, [1.0, 0.75, 0.75]);
    }

    #[test]
    fn integration_interpolates_at_the_limit() {
        // Thresholds ascending: (fpr, pro) = (1, 1), (0.5, 1), (0.1, 0.5).
        let fpr = [1.0, 0.5, 0.1];
        let pro = [1.0, 1.0, 0.5];
        // Curve: (0,0) -> (0.1,0.5) -> (0.3, 0.5 + 0.5 * 0.2/0.4 = 0.75).
        let area = 0.1 * 0.25 + 0.2 * (0.5 + 0.75) / 2.0;
        assert!((integrate(&fpr, &pro, 0.3).unwrap() - area / 0.3).abs() < 1e-12);
    }

    #[test]
    fn clean_rows_split_bands() {
        let mut mask = vec![0u8; 5 * 4];
        mask[1] = 9; // row 0
        mask[5 + 3] = 9; // row 1, diagonal to nothing: same band
        mask[3 * 5 + 4] = 9; // row 3, after a clean row
        let b = bands(&mask, 5, 9);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].x0, b[0].x1, b[0].y0, b[0].y1), (1, 3, 0, 1));
        assert_eq!((b[1].x0, b[1].x1, b[1].y0, b[1].y1), (4, 4, 3, 3));
    }

    #[test]
    fn frame_without_anomaly_adds_no_region() {
        let mut acc = ProAccumulator::new(5);
        acc.add_frame(&[0.3; 6], &[0; 6], 3, 9);
        assert_eq!(acc.regions(), 0);
        assert!(acc.pro_curve().is_none());
    }
}
