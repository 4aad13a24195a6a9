//! STARS as a [`TemporalMethod`]: the trained adapter ([`crate::model::stars`]) over a causal
//! window of the last three frames, in eval mode.
//!
//! Each frame is encoded once when it arrives (anomaly projection, fusion, confidence) and its
//! fused features are kept for the next two windows, so a frame costs one encoding and one pass
//! of the temporal module. A window that is not full yet repeats the sequence's first frame.
use std::collections::VecDeque;

use anyhow::{Context, Result};
use candle_core::Tensor;

use super::{AnomalyMap, Frame, TemporalMethod};
use crate::model::stars::{StarsRefiner, WINDOW};

/// The STARS refiner behind the [`TemporalMethod`] trait.
pub struct Stars {
    model: StarsRefiner,
    /// Fused features `(1, Cf, R, R)` of the last frames, oldest first.
    window: VecDeque<Tensor>,
}

impl Stars {
    /// Wraps a loaded refiner.
    pub fn new(model: StarsRefiner) -> Self {
        Self {
            model,
            window: VecDeque::with_capacity(WINDOW),
        }
    }
}

impl TemporalMethod for Stars {
    fn name(&self) -> &str {
        "stars"
    }

    fn needs_features(&self) -> bool {
        self.model.config().variant.uses_features()
    }

    fn reset(&mut self) {
        self.window.clear();
    }

    fn step(&mut self, frame: &Frame) -> Result<AnomalyMap> {
        let (w, h) = (frame.map.width, frame.map.height);
        let dev = self.model.device().clone();
        let map = Tensor::from_slice(&frame.map.data, (1, h, w), &dev)?;
        let features = match (&frame.features, self.needs_features()) {
            (Some(f), true) => Some(Tensor::from_slice(
                &f.data,
                (1, f.channels, f.grid_h, f.grid_w),
                &dev,
            )?),
            (None, true) => anyhow::bail!("stars needs backbone features for every frame"),
            (_, false) => None,
        };
        let enc = self
            .model
            .encode_t(&map, features.as_ref(), false)
            .context("stars: encoding the frame")?;
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(enc.fused);
        // t-2, t-1, t with the first frame standing in for the frames before it
        let first = self.window[0].clone();
        let mut frames: Vec<Tensor> =
            std::iter::repeat_n(first, WINDOW - self.window.len()).collect();
        frames.extend(self.window.iter().cloned());
        let windows = Tensor::stack(&frames, 1)?; // (1, WINDOW, Cf, R, R)
        let out = self
            .model
            .refine_t(&windows, &map, enc.confidence.as_ref(), false)
            .context("stars: refining the window")?;
        let data: Vec<f32> = out.refined.flatten_all()?.to_vec1()?;
        AnomalyMap::new(w, h, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::stars::{seeded_init, Config};
    use crate::temporal::PatchFeatures;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    fn method() -> (Stars, Config) {
        let cfg = Config::tiny();
        let vars = VarMap::new();
        let model = StarsRefiner::new(
            &cfg,
            VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
        )
        .unwrap();
        seeded_init(&vars, 1).unwrap();
        (Stars::new(model), cfg)
    }

    /// A 30x20 frame with deterministic map and features.
    fn frame(i: usize, channels: usize, grid: (usize, usize)) -> Frame {
        let (w, h) = (30, 20);
        let map: Vec<f32> = (0..w * h)
            .map(|p| ((p * 7 + i * 13) % 97) as f32 / 97.0)
            .collect();
        let n = channels * grid.0 * grid.1;
        let feats: Vec<f32> = (0..n)
            .map(|p| ((p * 5 + i * 3) % 11) as f32 - 5.0)
            .collect();
        Frame {
            stamp_ns: i as i64,
            map: AnomalyMap::new(w, h, map).unwrap(),
            features: Some(PatchFeatures::new(channels, grid.0, grid.1, feats).unwrap()),
        }
    }

    #[test]
    fn stream_matches_explicit_causal_windows_and_reset_restarts() {
        let (mut stars, cfg) = method();
        let c = cfg.feature_channels;
        let frames: Vec<Frame> = (0..4).map(|i| frame(i, c, (2, 3))).collect();
        let streamed: Vec<AnomalyMap> = frames.iter().map(|f| stars.step(f).unwrap()).collect();
        let as_tensor = |ids: [usize; 3]| {
            let maps: Vec<Tensor> = ids
                .iter()
                .map(|&i| Tensor::from_slice(&frames[i].map.data, (20, 30), &Device::Cpu).unwrap())
                .collect();
            let feats: Vec<Tensor> = ids
                .iter()
                .map(|&i| {
                    let f = frames[i].features.as_ref().unwrap();
                    Tensor::from_slice(&f.data, (c, 2, 3), &Device::Cpu).unwrap()
                })
                .collect();
            (
                Tensor::stack(&maps, 0).unwrap().unsqueeze(0).unwrap(),
                Tensor::stack(&feats, 0).unwrap().unsqueeze(0).unwrap(),
            )
        };
        // the refined map of one explicit window, computed by the batch path
        let explicit = |stars: &Stars, ids: [usize; 3]| -> Vec<f32> {
            let (maps, feats) = as_tensor(ids);
            stars
                .model
                .forward_t(&maps, Some(&feats), false)
                .unwrap()
                .refined
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        for (t, ids) in [(0, [0, 0, 0]), (1, [0, 0, 1]), (3, [1, 2, 3])] {
            let want = explicit(&stars, ids);
            let diff = want
                .iter()
                .zip(&streamed[t].data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(diff < 1e-5, "frame {t}: {diff}");
        }
        // after a reset, frame 3 opens a new window (3, 3, 3), not (1, 2, 3)
        stars.reset();
        let again = stars.step(&frames[3]).unwrap();
        let want = explicit(&stars, [3, 3, 3]);
        assert!(want
            .iter()
            .zip(&again.data)
            .all(|(a, b)| (a - b).abs() < 1e-5));
        assert_eq!((again.width, again.height), (30, 20));
    }

    #[test]
    fn wrong_channels_or_missing_features_are_errors_and_any_grid_is_taken() {
        let (mut stars, cfg) = method();
        let c = cfg.feature_channels;
        let err = stars.step(&frame(0, c + 1, (2, 3))).unwrap_err();
        assert!(format!("{err:#}").contains("channels"), "{err:#}");
        let mut f = frame(0, c, (2, 3));
        f.features = None;
        assert!(stars.step(&f).is_err());
        // nothing was pushed by the failed frames: the next good frame starts the window
        assert!(stars.window.is_empty());
        assert!(stars.step(&frame(0, c, (2, 3))).is_ok());
        // the grid spans the whole frame, whatever its size (the frame was resized to a square)
        assert!(stars.step(&frame(1, c, (4, 4))).is_ok());
    }
}
