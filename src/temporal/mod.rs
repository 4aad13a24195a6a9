//! Temporal methods: turn a sequence of single-frame detector maps into refined maps.
//!
//! Every method — the STARS refiner and the baselines it is compared with (centroid tracking,
//! a constant-velocity Kalman filter, an exponential moving average) — implements
//! [`TemporalMethod`], so the evaluator and the temporal node drive them all the same way:
//! feed the frames of one sequence in order, get one refined map per frame, [`reset`] between
//! sequences. [`Sequencer`] adds the window policy shared by all of them (restart on a new
//! sequence, a stamp gap or a stamp going backwards).
//!
//! Transport-free: no topics and no files here; `node` and `cli` do the plumbing. Two
//! exceptions: [`flicker`], the toy sequence generator, which can also write its sequences in
//! the TALLO layout for the command line, and [`open`], which builds a method from its name,
//! a baseline's YAML file or a refiner checkpoint. The baselines' exact rules and the numbers measured
//! on [`flicker`] data are in `docs/temporal.md`.
//!
//! [`reset`]: TemporalMethod::reset
use anyhow::{bail, Context, Result};

pub mod blobs;
pub mod centroid;
pub mod ema;
pub mod flicker;
pub mod kalman;
pub mod open;
pub mod stars;

use centroid::{CentroidConfig, CentroidTracker};
use ema::{Ema, EmaConfig};
use kalman::{KalmanConfig, KalmanTracker};

/// A per-pixel anomaly map, row-major `height x width`, values in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct AnomalyMap {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl AnomalyMap {
    /// Wraps `data`, checking that it holds `width * height` values.
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Result<Self> {
        if width == 0 || height == 0 || data.len() != width * height {
            bail!(
                "anomaly map {width}x{height} needs {} values, got {}",
                width * height,
                data.len()
            );
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// A map of one constant value.
    pub fn filled(width: usize, height: usize, value: f32) -> Self {
        Self {
            width,
            height,
            data: vec![value; width * height],
        }
    }

    /// Fails on NaN or infinite values, which no method may silently turn into "clear".
    pub fn check_finite(&self) -> Result<()> {
        if let Some(i) = self.data.iter().position(|v| !v.is_finite()) {
            bail!(
                "anomaly map has a non-finite value {} at pixel ({}, {})",
                self.data[i],
                i % self.width,
                i / self.width
            );
        }
        Ok(())
    }
}

/// DINOv2 patch tokens of one frame, channels first: `channels x grid_h x grid_w`.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchFeatures {
    pub channels: usize,
    pub grid_h: usize,
    pub grid_w: usize,
    pub data: Vec<f32>,
}

impl PatchFeatures {
    /// Wraps `data`, checking that it holds `channels * grid_h * grid_w` values.
    pub fn new(channels: usize, grid_h: usize, grid_w: usize, data: Vec<f32>) -> Result<Self> {
        if channels == 0 || grid_h == 0 || grid_w == 0 || data.len() != channels * grid_h * grid_w {
            bail!(
                "patch features {channels}x{grid_h}x{grid_w} need {} values, got {}",
                channels * grid_h * grid_w,
                data.len()
            );
        }
        Ok(Self {
            channels,
            grid_h,
            grid_w,
            data,
        })
    }
}

/// One frame as a temporal method sees it.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The frame's header stamp in nanoseconds (used for gap detection only).
    pub stamp_ns: i64,
    /// The single-frame detector's map of this frame.
    pub map: AnomalyMap,
    /// Backbone features of this frame, for methods that use them (STARS).
    pub features: Option<PatchFeatures>,
}

/// A causal temporal method: the output for frame t depends on frames up to t only.
pub trait TemporalMethod: Send {
    /// Short name used in tables and file names ("stars", "kalman", "centroid", "ema").
    fn name(&self) -> &str;
    /// Whether [`Frame::features`] must be present.
    fn needs_features(&self) -> bool {
        false
    }
    /// Forgets every earlier frame: the next frame starts a new sequence.
    fn reset(&mut self);
    /// Takes the next frame of the current sequence and returns its refined map, of the
    /// input map's size.
    fn step(&mut self, frame: &Frame) -> Result<AnomalyMap>;
}

/// Why a [`Sequencer`] restarted its method before a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// The caller said a new sequence starts here.
    NewSequence,
    /// The stamp advanced by more than the configured gap.
    Gap,
    /// The stamp did not advance (out of order or duplicated).
    Backwards,
}

/// Drives a [`TemporalMethod`] with the window policy every method shares: restart on a new
/// sequence, on a stamp gap longer than `max_gap_ns`, and when stamps stop increasing.
pub struct Sequencer {
    method: Box<dyn TemporalMethod>,
    max_gap_ns: i64,
    last_stamp: Option<i64>,
    restarts: u64,
}

impl Sequencer {
    /// Wraps `method`; a gap longer than `max_gap_ns` between stamps restarts the window.
    pub fn new(method: Box<dyn TemporalMethod>, max_gap_ns: i64) -> Self {
        Self {
            method,
            max_gap_ns,
            last_stamp: None,
            restarts: 0,
        }
    }

    /// The wrapped method.
    pub fn method(&self) -> &dyn TemporalMethod {
        self.method.as_ref()
    }

    /// How many times the window was restarted (not counting the first frame).
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Marks the start of a new sequence: the next frame opens a fresh window.
    pub fn new_sequence(&mut self) {
        self.method.reset();
        self.last_stamp = None;
    }

    /// Feeds one frame; returns its refined map and why the window restarted before it, if it
    /// did. A map with NaN/Inf values or missing features is an error and changes nothing.
    pub fn step(&mut self, frame: &Frame) -> Result<(AnomalyMap, Option<Restart>)> {
        frame.map.check_finite()?;
        if self.method.needs_features() && frame.features.is_none() {
            bail!(
                "{} needs backbone features for every frame",
                self.method.name()
            );
        }
        let restart = match self.last_stamp {
            None => None,
            Some(last) if frame.stamp_ns <= last => Some(Restart::Backwards),
            Some(last) if frame.stamp_ns.saturating_sub(last) > self.max_gap_ns => {
                Some(Restart::Gap)
            }
            Some(_) => None,
        };
        if restart.is_some() {
            self.method.reset();
            self.restarts += 1;
        }
        let out = self.method.step(frame)?;
        self.last_stamp = Some(frame.stamp_ns);
        Ok((out, restart))
    }
}

/// Runs `sequencer` over the frames of one sequence (after [`Sequencer::new_sequence`]) and
/// returns one refined map per frame.
pub fn run_sequence(sequencer: &mut Sequencer, frames: &[Frame]) -> Result<Vec<AnomalyMap>> {
    sequencer.new_sequence();
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            sequencer
                .step(f)
                .map(|(map, _)| map)
                .with_context(|| format!("frame {i}"))
        })
        .collect()
}

/// A temporal baseline and its parameters: what `stars refine --method` builds.
#[derive(Clone, Debug, PartialEq)]
pub enum Baseline {
    /// Exponential moving average ([`ema`]).
    Ema(EmaConfig),
    /// Centroid tracking ([`centroid`]).
    Centroid(CentroidConfig),
    /// Constant-velocity Kalman tracking ([`kalman`]).
    Kalman(KalmanConfig),
}

impl Baseline {
    /// The baselines' names, as [`TemporalMethod::name`] gives them.
    pub const NAMES: [&'static str; 3] = ["ema", "centroid", "kalman"];

    /// The baseline called `name` with its default parameters, overridden by the keys of
    /// `params_yaml` (a YAML mapping of the method's config fields; unknown keys are errors).
    pub fn from_name(name: &str, params_yaml: Option<&str>) -> Result<Self> {
        fn parse<T: serde::de::DeserializeOwned + Default>(yaml: Option<&str>) -> Result<T> {
            match yaml {
                None => Ok(T::default()),
                Some(text) if text.trim().is_empty() => Ok(T::default()),
                Some(text) => serde_yaml_ng::from_str(text).map_err(anyhow::Error::from),
            }
        }
        let baseline = match name {
            "ema" => Self::Ema(parse(params_yaml)?),
            "centroid" => Self::Centroid(parse(params_yaml)?),
            "kalman" => Self::Kalman(parse(params_yaml)?),
            other => bail!(
                "unknown temporal baseline {other:?} (known: {})",
                Self::NAMES.join(", ")
            ),
        };
        baseline.build()?; // reject bad values before any data is read
        Ok(baseline)
    }

    /// The method, ready for its first sequence.
    pub fn build(&self) -> Result<Box<dyn TemporalMethod>> {
        Ok(match self {
            Self::Ema(cfg) => Box::new(Ema::new(*cfg)?),
            Self::Centroid(cfg) => Box::new(CentroidTracker::new(*cfg)?),
            Self::Kalman(cfg) => Box::new(KalmanTracker::new(*cfg)?),
        })
    }

    /// The parameters in effect, as JSON (for the files written beside refined maps).
    #[expect(
        clippy::expect_used,
        reason = "configs are structs of plain numbers, which always serialise"
    )]
    pub fn params_json(&self) -> serde_json::Value {
        let value = match self {
            Self::Ema(cfg) => serde_json::to_value(cfg),
            Self::Centroid(cfg) => serde_json::to_value(cfg),
            Self::Kalman(cfg) => serde_json::to_value(cfg),
        };
        value.expect("configs are plain numbers")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 64x48 map at 0.1 with discs of radius 3 at 0.9 around `centres` (x, y).
    pub(crate) fn blob_frame(t: i64, centres: &[(f32, f32)]) -> Frame {
        let (w, h) = (64, 48);
        let data = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                let inside = centres
                    .iter()
                    .any(|&(cx, cy)| (x - cx).hypot(y - cy) <= 3.0);
                if inside {
                    0.9
                } else {
                    0.1
                }
            })
            .collect();
        Frame {
            stamp_ns: t * 100,
            map: AnomalyMap::new(w, h, data).unwrap(),
            features: None,
        }
    }

    /// The score at pixel (x, y).
    pub(crate) fn score_at(map: &AnomalyMap, x: usize, y: usize) -> f32 {
        map.data[y * map.width + x]
    }

    /// Counts the frames it has seen since its last reset, as a constant map.
    struct Counter(usize);

    impl TemporalMethod for Counter {
        fn name(&self) -> &str {
            "counter"
        }
        fn reset(&mut self) {
            self.0 = 0;
        }
        fn step(&mut self, frame: &Frame) -> Result<AnomalyMap> {
            self.0 += 1;
            Ok(AnomalyMap::filled(
                frame.map.width,
                frame.map.height,
                self.0 as f32,
            ))
        }
    }

    fn at(t: i64) -> Frame {
        Frame {
            stamp_ns: t,
            map: AnomalyMap::filled(2, 2, 0.5),
            features: None,
        }
    }

    #[test]
    fn sequencer_restarts_on_gaps_and_backwards_stamps() {
        let mut seq = Sequencer::new(Box::new(Counter(0)), 150);
        let mut seen = Vec::new();
        for t in [0, 100, 200, 400, 500, 500, 450, 550] {
            let (map, restart) = seq.step(&at(t)).unwrap();
            seen.push((map.data[0] as usize, restart));
        }
        use Restart::*;
        assert_eq!(
            seen,
            [
                (1, None),
                (2, None),
                (3, None),
                (1, Some(Gap)),
                (2, None),
                (1, Some(Backwards)),
                (1, Some(Backwards)),
                (2, None),
            ]
        );
        assert_eq!(seq.restarts(), 3);
        seq.new_sequence();
        // A new sequence may start at any stamp, earlier ones included.
        assert_eq!(
            seq.step(&at(0)).unwrap(),
            (AnomalyMap::filled(2, 2, 1.0), None)
        );
    }

    #[test]
    fn sequencer_rejects_nan_and_missing_features_without_stepping() {
        let mut seq = Sequencer::new(Box::new(Counter(0)), 150);
        seq.step(&at(0)).unwrap();
        let mut bad = at(100);
        bad.map.data[3] = f32::NAN;
        let err = seq.step(&bad).unwrap_err().to_string();
        assert!(
            err.contains("non-finite value NaN at pixel (1, 1)"),
            "{err}"
        );
        // The bad frame changed nothing: the next one continues the window.
        assert_eq!(seq.step(&at(100)).unwrap().0.data[0], 2.0);

        struct NeedsFeatures;
        impl TemporalMethod for NeedsFeatures {
            fn name(&self) -> &str {
                "needy"
            }
            fn needs_features(&self) -> bool {
                true
            }
            fn reset(&mut self) {}
            fn step(&mut self, frame: &Frame) -> Result<AnomalyMap> {
                Ok(frame.map.clone())
            }
        }
        let mut seq = Sequencer::new(Box::new(NeedsFeatures), 150);
        let err = seq.step(&at(0)).unwrap_err().to_string();
        assert!(err.contains("needy needs backbone features"), "{err}");
    }

    #[test]
    fn every_baseline_rejects_a_nan_map_through_the_sequencer() {
        for name in Baseline::NAMES {
            let method = Baseline::from_name(name, None).unwrap().build().unwrap();
            assert_eq!(method.name(), name);
            let mut seq = Sequencer::new(method, 150);
            let mut bad = blob_frame(0, &[(10.0, 10.0)]);
            bad.map.data[5] = f32::INFINITY;
            assert!(seq.step(&bad).is_err(), "{name}");
        }
    }

    #[test]
    fn baselines_take_yaml_parameters_and_reject_unknown_or_bad_ones() {
        let b = Baseline::from_name("ema", Some("alpha: 0.3")).unwrap();
        assert_eq!(b, Baseline::Ema(EmaConfig { alpha: 0.3 }));
        assert_eq!(b.params_json()["alpha"].as_f64().unwrap() as f32, 0.3);
        let b = Baseline::from_name("kalman", Some("gating: {outside_gain: 0.0}\nmin_hits: 3"))
            .unwrap();
        let Baseline::Kalman(cfg) = b else {
            panic!("not kalman")
        };
        assert_eq!((cfg.gating.outside_gain, cfg.min_hits), (0.0, 3));
        assert_eq!(cfg.gating.threshold, 0.5, "unset keys keep their defaults");
        let err = Baseline::from_name("centroid", Some("max_dist: 3"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
        assert!(Baseline::from_name("ema", Some("alpha: 1.5")).is_err());
        assert!(Baseline::from_name("sam2", None).is_err());
    }
}
