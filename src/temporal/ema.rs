//! Exponential moving average of maps: the cheapest temporal baseline (ours; the STARS paper's
//! Table III has none). `out(0) = m(0)`, `out(t) = alpha * m(t) + (1 - alpha) * out(t - 1)`.
//! It fills a one-frame dropout with part of the previous score and halves a one-frame glint,
//! but smears both into the following frames: smoothing, not reasoning.
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use super::{AnomalyMap, Frame, TemporalMethod};

/// Parameters of [`Ema`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmaConfig {
    /// Weight of the newest map, in (0, 1]; 1 returns the input unchanged.
    pub alpha: f32,
}

impl Default for EmaConfig {
    fn default() -> Self {
        Self { alpha: 0.5 }
    }
}

/// Exponential moving average of the detector maps.
pub struct Ema {
    cfg: EmaConfig,
    state: Option<AnomalyMap>,
}

impl Ema {
    /// A fresh average; fails unless `0 < alpha <= 1`.
    pub fn new(cfg: EmaConfig) -> Result<Self> {
        ensure!(
            cfg.alpha > 0.0 && cfg.alpha <= 1.0,
            "ema alpha must be in (0, 1], got {}",
            cfg.alpha
        );
        Ok(Self { cfg, state: None })
    }
}

impl TemporalMethod for Ema {
    fn name(&self) -> &str {
        "ema"
    }

    fn reset(&mut self) {
        self.state = None;
    }

    fn step(&mut self, frame: &Frame) -> Result<AnomalyMap> {
        let map = &frame.map;
        let next = match self.state.take() {
            Some(prev) if (prev.width, prev.height) == (map.width, map.height) => {
                let a = self.cfg.alpha;
                let data = map
                    .data
                    .iter()
                    .zip(&prev.data)
                    .map(|(&m, &p)| a * m + (1.0 - a) * p)
                    .collect();
                AnomalyMap { data, ..prev }
            }
            Some(prev) => anyhow::bail!(
                "map size changed within a sequence: {}x{} after {}x{}",
                map.width,
                map.height,
                prev.width,
                prev.height
            ),
            None => map.clone(),
        };
        self.state = Some(next.clone());
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(t: i64, v: f32) -> Frame {
        Frame {
            stamp_ns: t,
            map: AnomalyMap::filled(2, 1, v),
            features: None,
        }
    }

    #[test]
    fn averages_with_alpha_and_reset_forgets() {
        let mut ema = Ema::new(EmaConfig { alpha: 0.25 }).unwrap();
        assert_eq!(ema.step(&frame(0, 0.8)).unwrap().data, [0.8, 0.8]);
        // 0.25 * 0.0 + 0.75 * 0.8
        let second = ema.step(&frame(1, 0.0)).unwrap();
        assert!((second.data[0] - 0.6).abs() < 1e-6, "{second:?}");
        ema.reset();
        assert_eq!(ema.step(&frame(2, 0.2)).unwrap().data, [0.2, 0.2]);
    }

    #[test]
    fn bad_alpha_and_size_change_are_errors() {
        assert!(Ema::new(EmaConfig { alpha: 0.0 }).is_err());
        assert!(Ema::new(EmaConfig { alpha: f32::NAN }).is_err());
        let mut ema = Ema::new(EmaConfig::default()).unwrap();
        ema.step(&frame(0, 0.5)).unwrap();
        let other = Frame {
            stamp_ns: 1,
            map: AnomalyMap::filled(3, 1, 0.5),
            features: None,
        };
        let err = ema.step(&other).unwrap_err().to_string();
        assert!(err.contains("size changed"), "{err}");
    }
}
