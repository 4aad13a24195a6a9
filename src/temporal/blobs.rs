//! What the tracking baselines share: blobs (connected components of a thresholded map) with
//! their centroids and boxes, and the gate that keeps scores inside tracked regions and scales
//! everything else down.
use anyhow::{Context, Result};
use image::{GrayImage, Luma};
use imageproc::region_labelling::{connected_components, Connectivity};
use serde::{Deserialize, Serialize};

use super::AnomalyMap;

/// How maps become blobs and how tracked regions gate the scores.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gating {
    /// A pixel belongs to a blob when its score is >= this.
    pub threshold: f32,
    /// Blobs with fewer pixels are ignored (speckle).
    pub min_area: usize,
    /// Tracked regions are grown by this many pixels on every side before gating, so the
    /// blob's soft edge (below the threshold) is kept too.
    pub margin_px: f32,
    /// Scores outside every tracked region are multiplied by this (0 erases them, 1 turns the
    /// gate off); scaling rather than zeroing keeps their order for the ranking metrics.
    pub outside_gain: f32,
}

impl Default for Gating {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            min_area: 4,
            margin_px: 2.0,
            outside_gain: 0.25,
        }
    }
}

impl Gating {
    /// Rejects values that make the gate meaningless.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.threshold.is_finite() && (0.0..=1.0).contains(&self.threshold),
            "threshold must be in [0, 1], got {}",
            self.threshold
        );
        anyhow::ensure!(
            self.margin_px.is_finite() && self.margin_px >= 0.0,
            "margin_px must be >= 0, got {}",
            self.margin_px
        );
        anyhow::ensure!(
            self.outside_gain.is_finite() && (0.0..=1.0).contains(&self.outside_gain),
            "outside_gain must be in [0, 1], got {}",
            self.outside_gain
        );
        Ok(())
    }
}

/// An axis-aligned box in pixel coordinates; a pixel (x, y) is inside when
/// `x0 <= x <= x1` and `y0 <= y <= y1`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PixelBox {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

impl PixelBox {
    /// The box of half-size `(hw, hh)` centred on `(cx, cy)`.
    pub fn centred(cx: f32, cy: f32, hw: f32, hh: f32) -> Self {
        Self {
            x0: cx - hw,
            y0: cy - hh,
            x1: cx + hw,
            y1: cy + hh,
        }
    }

    /// Half-width and half-height.
    pub fn half_size(&self) -> (f32, f32) {
        ((self.x1 - self.x0) / 2.0, (self.y1 - self.y0) / 2.0)
    }

    /// The box grown by `m` on every side.
    pub fn grown(&self, m: f32) -> Self {
        Self {
            x0: self.x0 - m,
            y0: self.y0 - m,
            x1: self.x1 + m,
            y1: self.y1 + m,
        }
    }

    /// Intersection over union, counting a box as the pixels it covers (a one-pixel box has
    /// area 1, not 0).
    pub fn iou(&self, other: &Self) -> f32 {
        let side = |a0: f32, a1: f32| (a1 - a0 + 1.0).max(0.0);
        let inter = side(self.x0.max(other.x0), self.x1.min(other.x1))
            * side(self.y0.max(other.y0), self.y1.min(other.y1));
        let area = |b: &Self| side(b.x0, b.x1) * side(b.y0, b.y1);
        let union = area(self) + area(other) - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }
}

/// One connected component of a thresholded map.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Blob {
    /// Mean pixel position (x, y).
    pub centroid: (f32, f32),
    /// Bounding box of its pixels.
    pub bbox: PixelBox,
    /// Number of pixels.
    pub area: usize,
}

/// The 8-connected components of `score >= threshold` with at least `min_area` pixels, in
/// label order (first pixel in raster order).
pub fn find_blobs(map: &AnomalyMap, gating: &Gating) -> Result<Vec<Blob>> {
    let binary: Vec<u8> = map
        .data
        .iter()
        .map(|&s| u8::from(s >= gating.threshold))
        .collect();
    if !binary.contains(&1) {
        return Ok(Vec::new());
    }
    let image =
        GrayImage::from_raw(map.width as u32, map.height as u32, binary).with_context(|| {
            format!(
                "anomaly map {}x{} holds {} values",
                map.width,
                map.height,
                map.data.len()
            )
        })?;
    let labels = connected_components(&image, Connectivity::Eight, Luma([0u8]));
    // (sum x, sum y, count, x0, y0, x1, y1) per label.
    let mut acc: Vec<(f64, f64, usize, usize, usize, usize, usize)> = Vec::new();
    for (i, &label) in labels.as_raw().iter().enumerate() {
        if label == 0 {
            continue;
        }
        let (x, y) = (i % map.width, i / map.width);
        let l = label as usize - 1;
        if acc.len() <= l {
            acc.resize(l + 1, (0.0, 0.0, 0, usize::MAX, usize::MAX, 0, 0));
        }
        let a = &mut acc[l];
        a.0 += x as f64;
        a.1 += y as f64;
        a.2 += 1;
        a.3 = a.3.min(x);
        a.4 = a.4.min(y);
        a.5 = a.5.max(x);
        a.6 = a.6.max(y);
    }
    Ok(acc
        .into_iter()
        .filter(|a| a.2 >= gating.min_area.max(1))
        .map(|(sx, sy, n, x0, y0, x1, y1)| Blob {
            centroid: ((sx / n as f64) as f32, (sy / n as f64) as f32),
            bbox: PixelBox {
                x0: x0 as f32,
                y0: y0 as f32,
                x1: x1 as f32,
                y1: y1 as f32,
            },
            area: n,
        })
        .collect())
}

/// Keeps `map`'s scores inside any of `regions` (each grown by the margin) and multiplies the
/// rest by the outside gain.
pub fn gate(map: &AnomalyMap, regions: &[PixelBox], gating: &Gating) -> AnomalyMap {
    let grown: Vec<PixelBox> = regions.iter().map(|r| r.grown(gating.margin_px)).collect();
    let mut out = map.clone();
    for (i, v) in out.data.iter_mut().enumerate() {
        let (x, y) = ((i % map.width) as f32, (i / map.width) as f32);
        let inside = grown
            .iter()
            .any(|b| b.x0 <= x && x <= b.x1 && b.y0 <= y && y <= b.y1);
        if !inside {
            *v *= gating.outside_gain;
        }
    }
    out
}

/// Greedy one-to-one matching: candidate `(cost, track, blob)` pairs are taken cheapest first,
/// skipping tracks and blobs already used. Returns `matched[track] = Some(blob)`.
pub fn match_greedy(
    mut candidates: Vec<(f32, usize, usize)>,
    tracks: usize,
    blobs: usize,
) -> Vec<Option<usize>> {
    // Ties broken by index so the result never depends on the sort's stability.
    candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut matched = vec![None; tracks];
    let mut used = vec![false; blobs];
    for (_, t, b) in candidates {
        if matched[t].is_none() && !used[b] {
            matched[t] = Some(b);
            used[b] = true;
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_have_centroids_boxes_and_respect_min_area() {
        let mut map = AnomalyMap::filled(10, 8, 0.1);
        for y in 2..5 {
            for x in 3..7 {
                map.data[y * 10 + x] = 0.9;
            }
        }
        map.data[7 * 10 + 9] = 0.9; // a one-pixel speck
        let blobs = find_blobs(&map, &Gating::default()).unwrap();
        assert_eq!(blobs.len(), 1);
        assert_eq!(blobs[0].area, 12);
        assert_eq!(blobs[0].centroid, (4.5, 3.0));
        assert_eq!(
            blobs[0].bbox,
            PixelBox {
                x0: 3.0,
                y0: 2.0,
                x1: 6.0,
                y1: 4.0
            }
        );
    }

    #[test]
    fn gate_keeps_inside_and_scales_outside() {
        let map = AnomalyMap::filled(5, 1, 0.8);
        let gating = Gating {
            margin_px: 1.0,
            outside_gain: 0.5,
            ..Gating::default()
        };
        let region = PixelBox::centred(1.0, 0.0, 0.0, 0.0);
        let out = gate(&map, &[region], &gating);
        assert_eq!(out.data, [0.8, 0.8, 0.8, 0.4, 0.4]);
    }

    #[test]
    fn iou_counts_pixels() {
        let a = PixelBox::centred(0.0, 0.0, 0.0, 0.0);
        assert_eq!(a.iou(&a), 1.0);
        let b = PixelBox {
            x0: 0.0,
            y0: 0.0,
            x1: 1.0,
            y1: 0.0,
        };
        assert_eq!(a.iou(&b), 0.5);
        assert_eq!(a.iou(&PixelBox::centred(5.0, 5.0, 1.0, 1.0)), 0.0);
    }

    #[test]
    fn greedy_matching_takes_the_cheapest_pairs_first() {
        let m = match_greedy(vec![(3.0, 0, 0), (1.0, 1, 0), (2.0, 0, 1)], 2, 2);
        assert_eq!(m, [Some(1), Some(0)]);
    }
}
