//! Centroid tracking (STARS paper, Table III "+ Centroid tracking"): threshold the map, take its
//! connected components, link their centroids to the previous frame's by nearest distance, and
//! suppress scores outside tracked regions.
//!
//! The exact rule (ours; the paper gives none):
//! 1. Blobs: 8-connected components of `score >= threshold` with at least `min_area` pixels.
//! 2. Linking: each live track remembers its last blob. Every (track, blob) pair whose
//!    centroids are at most `max_distance` pixels apart is a candidate; candidates are taken
//!    nearest first, one blob per track and one track per blob. A linked track takes the blob's
//!    centroid and box and counts one more hit; an unlinked blob starts a track with one hit;
//!    an unlinked track counts a miss and is dropped after more than `max_misses` misses in a
//!    row (it keeps its last box meanwhile: no motion model).
//! 3. A track is *tracked* once it has `min_hits` hits (frames with a linked blob, the first
//!    included). With the defaults (2 hits, 1 miss) a blob passes from the second frame in
//!    which it is seen within one missed frame of the previous sighting; a blob seen in one
//!    isolated frame never passes.
//! 4. Output: scores inside the boxes of tracked tracks (grown by `margin_px`) unchanged, every
//!    other score multiplied by `outside_gain` (see [`Gating`]).
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use super::blobs::{find_blobs, gate, match_greedy, Gating, PixelBox};
use super::{AnomalyMap, Frame, TemporalMethod};

/// Parameters of [`CentroidTracker`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CentroidConfig {
    /// Blob extraction and gating.
    pub gating: Gating,
    /// Largest centroid displacement (pixels) that still links a blob to a track.
    pub max_distance: f32,
    /// Hits after which a track's region passes the gate.
    pub min_hits: u32,
    /// Consecutive frames a track may go unseen before it is dropped.
    pub max_misses: u32,
}

impl Default for CentroidConfig {
    fn default() -> Self {
        Self {
            gating: Gating::default(),
            max_distance: 8.0,
            min_hits: 2,
            max_misses: 1,
        }
    }
}

#[derive(Clone, Debug)]
struct Track {
    centroid: (f32, f32),
    bbox: PixelBox,
    hits: u32,
    misses: u32,
}

/// Nearest-centroid tracker that gates the map to tracked blobs.
pub struct CentroidTracker {
    cfg: CentroidConfig,
    tracks: Vec<Track>,
}

impl CentroidTracker {
    /// A tracker with no tracks; fails on meaningless parameters.
    pub fn new(cfg: CentroidConfig) -> Result<Self> {
        cfg.gating.validate()?;
        ensure!(
            cfg.max_distance.is_finite() && cfg.max_distance >= 0.0,
            "max_distance must be >= 0, got {}",
            cfg.max_distance
        );
        ensure!(cfg.min_hits >= 1, "min_hits must be at least 1");
        Ok(Self {
            cfg,
            tracks: Vec::new(),
        })
    }
}

fn distance(a: (f32, f32), b: (f32, f32)) -> f32 {
    (a.0 - b.0).hypot(a.1 - b.1)
}

impl TemporalMethod for CentroidTracker {
    fn name(&self) -> &str {
        "centroid"
    }

    fn reset(&mut self) {
        self.tracks.clear();
    }

    fn step(&mut self, frame: &Frame) -> Result<AnomalyMap> {
        let blobs = find_blobs(&frame.map, &self.cfg.gating)?;
        let mut candidates = Vec::new();
        for (t, track) in self.tracks.iter().enumerate() {
            for (b, blob) in blobs.iter().enumerate() {
                let d = distance(track.centroid, blob.centroid);
                if d <= self.cfg.max_distance {
                    candidates.push((d, t, b));
                }
            }
        }
        let matched = match_greedy(candidates, self.tracks.len(), blobs.len());
        let mut used = vec![false; blobs.len()];
        for (track, m) in self.tracks.iter_mut().zip(&matched) {
            match *m {
                Some(b) => {
                    used[b] = true;
                    track.centroid = blobs[b].centroid;
                    track.bbox = blobs[b].bbox;
                    track.hits += 1;
                    track.misses = 0;
                }
                None => track.misses += 1,
            }
        }
        let max_misses = self.cfg.max_misses;
        self.tracks.retain(|t| t.misses <= max_misses);
        self.tracks.extend(
            blobs
                .iter()
                .zip(&used)
                .filter(|(_, &u)| !u)
                .map(|(blob, _)| Track {
                    centroid: blob.centroid,
                    bbox: blob.bbox,
                    hits: 1,
                    misses: 0,
                }),
        );
        let regions: Vec<PixelBox> = self
            .tracks
            .iter()
            .filter(|t| t.hits >= self.cfg.min_hits)
            .map(|t| t.bbox)
            .collect();
        Ok(gate(&frame.map, &regions, &self.cfg.gating))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{blob_frame, score_at};
    use super::*;

    #[test]
    fn a_steady_blob_passes_from_its_second_frame() {
        let mut tracker = CentroidTracker::new(CentroidConfig::default()).unwrap();
        let first = tracker.step(&blob_frame(0, &[(10.0, 10.0)])).unwrap();
        assert!((score_at(&first, 10, 10) - 0.9 * 0.25).abs() < 1e-6);
        for t in 1..4 {
            let out = tracker.step(&blob_frame(t, &[(10.0, 10.0)])).unwrap();
            assert_eq!(score_at(&out, 10, 10), 0.9, "frame {t}");
            // Background far from the blob is scaled down.
            assert!((score_at(&out, 30, 2) - 0.1 * 0.25).abs() < 1e-6);
        }
    }

    #[test]
    fn an_isolated_blob_is_suppressed() {
        let mut tracker = CentroidTracker::new(CentroidConfig::default()).unwrap();
        tracker.step(&blob_frame(0, &[(10.0, 10.0)])).unwrap();
        tracker.step(&blob_frame(1, &[(10.0, 10.0)])).unwrap();
        // A glint far from the tracked blob, in one frame only.
        let out = tracker
            .step(&blob_frame(2, &[(10.0, 10.0), (30.0, 20.0)]))
            .unwrap();
        assert_eq!(score_at(&out, 10, 10), 0.9);
        assert!(score_at(&out, 30, 20) < 0.25);
    }

    #[test]
    fn reset_forgets_the_tracks() {
        let mut tracker = CentroidTracker::new(CentroidConfig::default()).unwrap();
        tracker.step(&blob_frame(0, &[(10.0, 10.0)])).unwrap();
        tracker.step(&blob_frame(1, &[(10.0, 10.0)])).unwrap();
        tracker.reset();
        let out = tracker.step(&blob_frame(2, &[(10.0, 10.0)])).unwrap();
        assert!(score_at(&out, 10, 10) < 0.25);
    }

    #[test]
    fn a_jump_beyond_max_distance_starts_a_new_track() {
        let mut tracker = CentroidTracker::new(CentroidConfig::default()).unwrap();
        tracker.step(&blob_frame(0, &[(10.0, 10.0)])).unwrap();
        let out = tracker.step(&blob_frame(1, &[(25.0, 10.0)])).unwrap();
        assert!(score_at(&out, 25, 10) < 0.25);
    }

    #[test]
    fn bad_parameters_are_errors() {
        for cfg in [
            CentroidConfig {
                min_hits: 0,
                ..CentroidConfig::default()
            },
            CentroidConfig {
                max_distance: f32::NAN,
                ..CentroidConfig::default()
            },
            CentroidConfig {
                gating: Gating {
                    outside_gain: 2.0,
                    ..Gating::default()
                },
                ..CentroidConfig::default()
            },
        ] {
            assert!(CentroidTracker::new(cfg).is_err(), "{cfg:?}");
        }
    }
}
