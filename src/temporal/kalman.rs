//! Constant-velocity Kalman tracking of blob centroids (STARS paper, Table III "+ Kalman
//! filter"): blobs as in centroid tracking, one filter per track with state `[x, y, vx, vy]`
//! (pixels, pixels per frame) and measurement `[x, y]`, association by IoU or proximity to the
//! *predicted* position, and the map gated to the predicted regions of confirmed tracks.
//!
//! The exact rule (ours; the paper gives none), per frame:
//! 1. Predict every track one frame ahead (`x <- F x`, `P <- F P F^T + Q`, `Q` the discrete
//!    white-acceleration noise of variance `process_noise`). Its predicted box is its last
//!    blob's box centred on the predicted position.
//! 2. Blobs: 8-connected components of `score >= threshold`, at least `min_area` pixels.
//! 3. A (track, blob) pair is a candidate when the blob's box overlaps the predicted box with
//!    IoU >= `min_iou` or its centroid lies within `max_distance` pixels of the predicted
//!    position; candidates are taken nearest first, one to one. A matched track is updated with
//!    the centroid (measurement noise variance `measurement_noise`) and counts a hit; an
//!    unmatched blob is born as a track at rest (`[cx, cy, 0, 0]`, velocity standard deviation
//!    `initial_speed_std`) with one hit; an unmatched track coasts on its prediction and dies
//!    after more than `max_misses` misses in a row.
//! 4. A track is *confirmed* once it has `min_hits` hits. Scores inside the predicted box of a
//!    confirmed track, and inside the blob it matched this frame, both grown by `margin_px`,
//!    pass; every other score is multiplied by `outside_gain`. A confirmed track that coasts
//!    through a dropout keeps its predicted region open, so it re-acquires the blob where it
//!    reappears, even after a move longer than `max_distance` per missed frame would allow a
//!    tracker without a motion model.
use anyhow::{ensure, Result};
use nalgebra::{Matrix2, Matrix2x4, Matrix4, Vector2, Vector4};
use serde::{Deserialize, Serialize};

use super::blobs::{find_blobs, gate, match_greedy, Blob, Gating, PixelBox};
use super::{AnomalyMap, Frame, TemporalMethod};

/// Parameters of [`KalmanTracker`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KalmanConfig {
    /// Blob extraction and gating.
    pub gating: Gating,
    /// Variance of the random acceleration, pixels^2 / frame^4.
    pub process_noise: f64,
    /// Variance of a centroid measurement, pixels^2.
    pub measurement_noise: f64,
    /// Standard deviation of a new track's velocity, pixels / frame.
    pub initial_speed_std: f64,
    /// A blob whose centroid is at most this far (pixels) from a prediction is a candidate.
    pub max_distance: f32,
    /// A blob whose box overlaps a predicted box with at least this IoU is a candidate.
    pub min_iou: f32,
    /// Hits after which a track is confirmed and its region passes the gate.
    pub min_hits: u32,
    /// Consecutive frames a track may coast unseen before it dies.
    pub max_misses: u32,
}

impl Default for KalmanConfig {
    fn default() -> Self {
        Self {
            gating: Gating::default(),
            process_noise: 0.25,
            measurement_noise: 1.0,
            initial_speed_std: 4.0,
            max_distance: 8.0,
            min_iou: 0.1,
            min_hits: 2,
            max_misses: 2,
        }
    }
}

#[derive(Clone, Debug)]
struct Track {
    x: Vector4<f64>,
    p: Matrix4<f64>,
    half_size: (f32, f32),
    hits: u32,
    misses: u32,
}

impl Track {
    fn position(&self) -> (f32, f32) {
        (self.x[0] as f32, self.x[1] as f32)
    }

    fn region(&self) -> PixelBox {
        let (cx, cy) = self.position();
        PixelBox::centred(cx, cy, self.half_size.0, self.half_size.1)
    }
}

/// Constant-velocity Kalman tracker that gates the map to predicted regions.
pub struct KalmanTracker {
    cfg: KalmanConfig,
    f: Matrix4<f64>,
    q: Matrix4<f64>,
    h: Matrix2x4<f64>,
    r: Matrix2<f64>,
    tracks: Vec<Track>,
}

impl KalmanTracker {
    /// A tracker with no tracks; fails on meaningless parameters.
    pub fn new(cfg: KalmanConfig) -> Result<Self> {
        cfg.gating.validate()?;
        for (name, v) in [
            ("process_noise", cfg.process_noise),
            ("measurement_noise", cfg.measurement_noise),
            ("initial_speed_std", cfg.initial_speed_std),
        ] {
            ensure!(v.is_finite() && v > 0.0, "{name} must be > 0, got {v}");
        }
        ensure!(
            cfg.max_distance.is_finite() && cfg.max_distance >= 0.0,
            "max_distance must be >= 0, got {}",
            cfg.max_distance
        );
        ensure!(
            cfg.min_iou.is_finite() && cfg.min_iou > 0.0 && cfg.min_iou <= 1.0,
            "min_iou must be in (0, 1], got {}",
            cfg.min_iou
        );
        ensure!(cfg.min_hits >= 1, "min_hits must be at least 1");
        // dt = 1 frame.
        #[rustfmt::skip]
        let f = Matrix4::new(
            1.0, 0.0, 1.0, 0.0,
            0.0, 1.0, 0.0, 1.0,
            0.0, 0.0, 1.0, 0.0,
            0.0, 0.0, 0.0, 1.0,
        );
        // Discrete white acceleration: G = [1/2, 1/2, 1, 1] per axis, Q = q G G^T per axis.
        #[rustfmt::skip]
        let q = Matrix4::new(
            0.25, 0.0, 0.5, 0.0,
            0.0, 0.25, 0.0, 0.5,
            0.5, 0.0, 1.0, 0.0,
            0.0, 0.5, 0.0, 1.0,
        ) * cfg.process_noise;
        #[rustfmt::skip]
        let h = Matrix2x4::new(
            1.0, 0.0, 0.0, 0.0,
            0.0, 1.0, 0.0, 0.0,
        );
        let r = Matrix2::identity() * cfg.measurement_noise;
        Ok(Self {
            cfg,
            f,
            q,
            h,
            r,
            tracks: Vec::new(),
        })
    }

    fn birth(&self, blob: &Blob) -> Track {
        let (r, v) = (
            self.cfg.measurement_noise,
            self.cfg.initial_speed_std.powi(2),
        );
        Track {
            x: Vector4::new(blob.centroid.0 as f64, blob.centroid.1 as f64, 0.0, 0.0),
            p: Matrix4::from_diagonal(&Vector4::new(r, r, v, v)),
            half_size: blob.bbox.half_size(),
            hits: 1,
            misses: 0,
        }
    }

    fn update(&self, track: &mut Track, blob: &Blob) {
        let z = Vector2::new(blob.centroid.0 as f64, blob.centroid.1 as f64);
        let innovation = z - self.h * track.x;
        let s = self.h * track.p * self.h.transpose() + self.r;
        // S is symmetric positive definite (R > 0), so the inverse exists.
        let s_inv = s.try_inverse().unwrap_or_else(Matrix2::identity);
        let gain = track.p * self.h.transpose() * s_inv;
        track.x += gain * innovation;
        track.p = (Matrix4::identity() - gain * self.h) * track.p;
        track.half_size = blob.bbox.half_size();
    }
}

impl TemporalMethod for KalmanTracker {
    fn name(&self) -> &str {
        "kalman"
    }

    fn reset(&mut self) {
        self.tracks.clear();
    }

    fn step(&mut self, frame: &Frame) -> Result<AnomalyMap> {
        for track in &mut self.tracks {
            track.x = self.f * track.x;
            track.p = self.f * track.p * self.f.transpose() + self.q;
        }
        let blobs = find_blobs(&frame.map, &self.cfg.gating)?;
        let mut candidates = Vec::new();
        for (t, track) in self.tracks.iter().enumerate() {
            let (predicted, region) = (track.position(), track.region());
            for (b, blob) in blobs.iter().enumerate() {
                let d = (predicted.0 - blob.centroid.0).hypot(predicted.1 - blob.centroid.1);
                if d <= self.cfg.max_distance || region.iou(&blob.bbox) >= self.cfg.min_iou {
                    candidates.push((d, t, b));
                }
            }
        }
        let matched = match_greedy(candidates, self.tracks.len(), blobs.len());
        let mut regions = Vec::new();
        let mut used = vec![false; blobs.len()];
        let mut tracks = std::mem::take(&mut self.tracks);
        for (track, m) in tracks.iter_mut().zip(&matched) {
            // The predicted region, before this frame's measurement moves it.
            let predicted = track.region();
            match *m {
                Some(b) => {
                    used[b] = true;
                    self.update(track, &blobs[b]);
                    track.hits += 1;
                    track.misses = 0;
                    if track.hits >= self.cfg.min_hits {
                        regions.push(predicted);
                        regions.push(blobs[b].bbox);
                    }
                }
                None => {
                    track.misses += 1;
                    if track.hits >= self.cfg.min_hits && track.misses <= self.cfg.max_misses {
                        regions.push(predicted);
                    }
                }
            }
        }
        tracks.retain(|t| t.misses <= self.cfg.max_misses);
        for (blob, _) in blobs.iter().zip(&used).filter(|(_, &u)| !u) {
            let born = self.birth(blob);
            if born.hits >= self.cfg.min_hits {
                regions.push(blob.bbox);
            }
            tracks.push(born);
        }
        self.tracks = tracks;
        Ok(gate(&frame.map, &regions, &self.cfg.gating))
    }
}

#[cfg(test)]
mod tests {
    use super::super::centroid::{CentroidConfig, CentroidTracker};
    use super::super::tests::{blob_frame, score_at};
    use super::*;

    #[test]
    fn a_steady_blob_passes_and_an_isolated_one_is_suppressed() {
        let mut kf = KalmanTracker::new(KalmanConfig::default()).unwrap();
        let first = kf.step(&blob_frame(0, &[(10.0, 10.0)])).unwrap();
        assert!(
            score_at(&first, 10, 10) < 0.25,
            "unconfirmed on its first frame"
        );
        for t in 1..4 {
            let out = kf.step(&blob_frame(t, &[(10.0, 10.0)])).unwrap();
            assert_eq!(score_at(&out, 10, 10), 0.9, "frame {t}");
        }
        let out = kf
            .step(&blob_frame(4, &[(10.0, 10.0), (30.0, 20.0)]))
            .unwrap();
        assert_eq!(score_at(&out, 10, 10), 0.9);
        assert!(score_at(&out, 30, 20) < 0.25, "a one-frame glint is gated");
    }

    #[test]
    fn a_constant_velocity_blob_is_tracked_through_a_one_frame_dropout() {
        // 6 px per frame: a link is within max_distance (8) frame to frame, but the 12 px
        // jump across the dropout is not, so only a motion model re-acquires it at once.
        let x = |t: i64| 8.0 + 6.0 * t as f32;
        let frames: Vec<Frame> = (0..7)
            .map(|t| {
                let blobs: &[(f32, f32)] = if t == 4 { &[] } else { &[(x(t), 12.0)] };
                blob_frame(t, blobs)
            })
            .collect();
        let mut kf = KalmanTracker::new(KalmanConfig::default()).unwrap();
        let mut centroid = CentroidTracker::new(CentroidConfig::default()).unwrap();
        let (mut kf_out, mut c_out) = (Vec::new(), Vec::new());
        for f in &frames {
            kf_out.push(kf.step(f).unwrap());
            c_out.push(centroid.step(f).unwrap());
        }
        for t in [1, 2, 3, 5, 6] {
            let px = x(t).round() as usize;
            assert_eq!(
                score_at(&kf_out[t as usize], px, 12),
                0.9,
                "kalman frame {t}"
            );
        }
        // During the dropout the predicted region stays open: the background there keeps its
        // score while the rest of the map is scaled down.
        let px = x(4).round() as usize;
        assert_eq!(score_at(&kf_out[4], px, 12), 0.1);
        assert!(score_at(&kf_out[4], 5, 40) < 0.1);
        // Without a motion model the blob after the dropout is a new, unconfirmed track.
        let px = x(5).round() as usize;
        assert!(score_at(&c_out[5], px, 12) < 0.25);
    }

    #[test]
    fn reset_forgets_the_tracks() {
        let mut kf = KalmanTracker::new(KalmanConfig::default()).unwrap();
        for t in 0..3 {
            kf.step(&blob_frame(t, &[(10.0, 10.0)])).unwrap();
        }
        kf.reset();
        let out = kf.step(&blob_frame(3, &[(10.0, 10.0)])).unwrap();
        assert!(score_at(&out, 10, 10) < 0.25);
    }

    #[test]
    fn bad_parameters_are_errors() {
        for cfg in [
            KalmanConfig {
                measurement_noise: 0.0,
                ..KalmanConfig::default()
            },
            KalmanConfig {
                min_iou: 0.0,
                ..KalmanConfig::default()
            },
            KalmanConfig {
                min_hits: 0,
                ..KalmanConfig::default()
            },
        ] {
            assert!(KalmanTracker::new(cfg).is_err(), "{cfg:?}");
        }
    }
}
