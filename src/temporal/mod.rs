//! Temporal methods: turn a sequence of single-frame detector maps into refined maps.
//!
//! Every method — the STARS refiner and the baselines it is compared with (centroid tracking,
//! a constant-velocity Kalman filter, an exponential moving average) — implements
//! [`TemporalMethod`], so the evaluator and the temporal node drive them all the same way:
//! feed the frames of one sequence in order, get one refined map per frame, [`reset`] between
//! sequences. [`Sequencer`] adds the window policy shared by all of them (restart on a new
//! sequence, a stamp gap or a stamp going backwards).
//!
//! Transport-free: no topics and no files here; `node` and `cli` do the plumbing.
//!
//! [`reset`]: TemporalMethod::reset
use anyhow::{bail, Result};

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
        if channels == 0 || grid_h == 0 || grid_w == 0 || data.len() != channels * grid_h * grid_w
        {
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
            bail!("{} needs backbone features for every frame", self.method.name());
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
