//! Toy sequences whose anomaly cue is temporal, not appearance: the data on which temporal
//! reasoning can be shown to be learned (issue 9) and the baselines compared.
//!
//! Each sequence holds `frames` detector-like maps (`width x height`, values in [0, 1]) with
//! exact masks and patch features:
//! - background: smooth value noise in `background`, drifting slowly from frame to frame;
//! - anomalous sequences (even indices, so half of them): one true anomaly, a disc of radius
//!   `radius` (mask id 9 in every frame) moving in a straight line at `speed` pixels per frame
//!   and bouncing off the borders. Its score is a dome peaking at a value drawn from `peak`,
//!   except in one frame of each block of three (frames 0-2, 3-5, ...), drawn at random, where it
//!   drops to the background (the mask still marks it);
//! - glints, in every sequence: with probability `glint_rate` per frame, one disc of the same
//!   radius and the same peak range at a random place (kept clear of the anomaly), in that frame
//!   only. Glints are normal pixels (mask id 0).
//!
//! A single frame cannot tell a glint from the anomaly (same shape, same score distribution);
//! only persistence over frames can. The patch features are smooth noise independent of the
//! masks, identical in distribution inside and outside the anomaly, so a refiner that reads them
//! gains no appearance cue either.
//!
//! Deterministic: the same config and seed give the same bytes. [`FlickerSet::write`] lays the
//! sequences out for `stars refine` and `stars eval`; [`score`] is the scoring used in
//! `docs/temporal.md` and the tests.
use std::path::Path;

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use nalgebra::Point3;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{run_sequence, AnomalyMap, Frame, PatchFeatures, Sequencer, TemporalMethod};
use crate::data::synth::noise;
use crate::eval::{EvalConfig, Evaluator, Metrics};

/// Stamp step between frames (10 Hz), in nanoseconds.
pub const FRAME_PERIOD_NS: i64 = 100_000_000;
/// Mask id of the true anomaly.
pub const ANOMALY_ID: u8 = 9;
/// Score at which [`FlickerScore`] counts a frame as alarmed (below every peak).
pub const ALARM_THRESHOLD: f32 = 0.5;

/// How to generate a [`FlickerSet`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlickerConfig {
    /// Number of sequences; even indices are anomalous, odd ones clean.
    pub sequences: usize,
    /// Frames per sequence.
    pub frames: usize,
    /// Map width in pixels.
    pub width: usize,
    /// Map height in pixels.
    pub height: usize,
    /// Radius of the anomaly and of every glint, pixels.
    pub radius: f32,
    /// Anomaly speed, pixels per frame.
    pub speed: f32,
    /// Range of the peak score of the anomaly and of glints (drawn per frame).
    pub peak: [f32; 2],
    /// Range of the background score.
    pub background: [f32; 2],
    /// Probability that a frame has a glint.
    pub glint_rate: f32,
    /// Channels of the patch features.
    pub feature_channels: usize,
    /// Pixels per feature patch: the grid is `ceil(height / patch) x ceil(width / patch)`.
    pub patch: usize,
}

impl Default for FlickerConfig {
    fn default() -> Self {
        Self {
            sequences: 8,
            frames: 10,
            width: 64,
            height: 48,
            radius: 5.0,
            speed: 1.0,
            peak: [0.6, 0.95],
            background: [0.05, 0.4],
            glint_rate: 0.5,
            feature_channels: 32,
            patch: 4,
        }
    }
}

impl FlickerConfig {
    fn validate(&self) -> Result<()> {
        ensure!(
            self.sequences > 0 && self.frames > 0,
            "flicker: sequences and frames must be > 0"
        );
        ensure!(
            self.radius.is_finite() && self.radius >= 1.0,
            "flicker: radius must be >= 1, got {}",
            self.radius
        );
        let side = 2.0 * self.radius + 3.0;
        ensure!(
            self.width as f32 >= side && self.height as f32 >= side,
            "flicker: a {}x{} map cannot hold a disc of radius {}",
            self.width,
            self.height,
            self.radius
        );
        let in_unit = |r: [f32; 2]| r[0].is_finite() && 0.0 <= r[0] && r[0] <= r[1] && r[1] <= 1.0;
        ensure!(
            in_unit(self.peak) && in_unit(self.background),
            "flicker: peak and background must be ranges within [0, 1]"
        );
        ensure!(
            self.speed.is_finite() && self.speed >= 0.0,
            "flicker: speed must be >= 0"
        );
        ensure!(
            (0.0..=1.0).contains(&self.glint_rate),
            "flicker: glint_rate must be in [0, 1]"
        );
        ensure!(
            self.feature_channels > 0 && self.patch > 0,
            "flicker: feature_channels and patch must be > 0"
        );
        Ok(())
    }
}

/// One generated sequence.
#[derive(Clone, Debug)]
pub struct FlickerSequence {
    /// Folder name: `flicker_seqNNN_anomalous` or `flicker_seqNNN_clean`.
    pub name: String,
    /// Whether it holds the true anomaly.
    pub anomalous: bool,
    /// Maps and features, stamped every [`FRAME_PERIOD_NS`].
    pub frames: Vec<Frame>,
    /// Row-major semantic ids per frame: [`ANOMALY_ID`] on the anomaly, 0 elsewhere.
    pub masks: Vec<Vec<u8>>,
    /// Frames in which the anomaly's score dropped to the background.
    pub dropped: Vec<bool>,
    /// Frames that hold a glint.
    pub glint: Vec<bool>,
}

/// The sequences of one seed, with what made them.
#[derive(Clone, Debug)]
pub struct FlickerSet {
    /// The generator's settings.
    pub config: FlickerConfig,
    /// The seed.
    pub seed: u64,
    /// Sequences in index order.
    pub sequences: Vec<FlickerSequence>,
}

/// Generates the sequences of `seed`.
pub fn generate(config: &FlickerConfig, seed: u64) -> Result<FlickerSet> {
    config.validate()?;
    let sequences = (0..config.sequences)
        .map(|i| sequence(config, seed, i))
        .collect();
    Ok(FlickerSet {
        config: config.clone(),
        seed,
        sequences,
    })
}

/// A disc's score at distance `d` from its centre: a dome from `peak` to 0.6 `peak` at the rim.
fn dome(peak: f32, d: f32, radius: f32) -> f32 {
    peak * (1.0 - 0.4 * (d / radius).powi(2))
}

fn sequence(cfg: &FlickerConfig, seed: u64, index: usize) -> FlickerSequence {
    let salt = noise::derive(seed, &[index as u64]);
    let mut rng = StdRng::seed_from_u64(salt);
    let anomalous = index % 2 == 0;
    let (w, h, r) = (cfg.width, cfg.height, cfg.radius);
    let (lo_x, hi_x) = (r + 1.0, w as f32 - 2.0 - r);
    let (lo_y, hi_y) = (r + 1.0, h as f32 - 2.0 - r);
    let mut pos = (rng.random_range(lo_x..=hi_x), rng.random_range(lo_y..=hi_y));
    let angle = rng.random_range(0.0..std::f32::consts::TAU);
    let mut vel = (cfg.speed * angle.cos(), cfg.speed * angle.sin());
    let dropped: Vec<bool> = {
        let mut d = vec![false; cfg.frames];
        for start in (0..cfg.frames).step_by(3) {
            let k = start + rng.random_range(0..3);
            if anomalous && k < cfg.frames {
                d[k] = true;
            }
        }
        d
    };
    let [b_lo, b_hi] = cfg.background;
    let (gh, gw) = (h.div_ceil(cfg.patch), w.div_ceil(cfg.patch));
    let mut out = FlickerSequence {
        name: format!(
            "flicker_seq{index:03}_{}",
            if anomalous { "anomalous" } else { "clean" }
        ),
        anomalous,
        frames: Vec::with_capacity(cfg.frames),
        masks: Vec::with_capacity(cfg.frames),
        dropped,
        glint: Vec::with_capacity(cfg.frames),
    };
    for t in 0..cfg.frames {
        let z = t as f64 * 0.15;
        let mut map: Vec<f32> = (0..w * h)
            .map(|i| {
                let p = Point3::new((i % w) as f64 / 12.0, (i / w) as f64 / 12.0, z);
                b_lo + (b_hi - b_lo) * noise::fbm(&p, 2, salt) as f32
            })
            .collect();
        let mut mask = vec![0u8; w * h];
        let stamp = |centre: (f32, f32), peak: f32, map: &mut [f32], id: Option<&mut [u8]>| {
            let mut id = id;
            for y in 0..h {
                for x in 0..w {
                    let d = (x as f32 - centre.0).hypot(y as f32 - centre.1);
                    if d <= r {
                        let i = y * w + x;
                        if peak > 0.0 {
                            map[i] = map[i].max(dome(peak, d, r));
                        }
                        if let Some(id) = id.as_deref_mut() {
                            id[i] = ANOMALY_ID;
                        }
                    }
                }
            }
        };
        if anomalous {
            let peak = rng.random_range(cfg.peak[0]..=cfg.peak[1]);
            let shown = if out.dropped[t] { 0.0 } else { peak };
            stamp(pos, shown, &mut map, Some(&mut mask));
        }
        let has_glint = rng.random::<f32>() < cfg.glint_rate;
        if has_glint {
            let peak = rng.random_range(cfg.peak[0]..=cfg.peak[1]);
            // Clear of the anomaly, so a glint never overlaps its mask; 32 tries, then none.
            let spot = (0..32)
                .map(|_| (rng.random_range(lo_x..=hi_x), rng.random_range(lo_y..=hi_y)))
                .find(|c| !anomalous || (c.0 - pos.0).hypot(c.1 - pos.1) > 2.0 * r + 2.0);
            if let Some(c) = spot {
                stamp(c, peak, &mut map, None);
            }
            out.glint.push(spot.is_some());
        } else {
            out.glint.push(false);
        }
        let features: Vec<f32> = (0..cfg.feature_channels * gh * gw)
            .map(|i| {
                let (c, g) = (i / (gh * gw), i % (gh * gw));
                let p = Point3::new(
                    (g % gw) as f64 / 3.0,
                    (g / gw) as f64 / 3.0,
                    c as f64 * 7.1 + z,
                );
                2.0 * noise::value(&p, salt ^ 0xfea7) as f32 - 1.0
            })
            .collect();
        out.frames.push(Frame {
            stamp_ns: t as i64 * FRAME_PERIOD_NS,
            map: AnomalyMap {
                width: w,
                height: h,
                data: map,
            },
            features: Some(PatchFeatures {
                channels: cfg.feature_channels,
                grid_h: gh,
                grid_w: gw,
                data: features,
            }),
        });
        out.masks.push(mask);
        // Move, bouncing off the borders.
        pos.0 += vel.0;
        pos.1 += vel.1;
        if pos.0 < lo_x || pos.0 > hi_x {
            vel.0 = -vel.0;
            pos.0 = pos.0.clamp(lo_x, hi_x);
        }
        if pos.1 < lo_y || pos.1 > hi_y {
            vel.1 = -vel.1;
            pos.1 = pos.1.clamp(lo_y, hi_y);
        }
    }
    out
}

impl FlickerSet {
    /// The single-frame maps, as a method's output would be laid out.
    pub fn single_frame_maps(&self) -> Vec<Vec<AnomalyMap>> {
        self.sequences
            .iter()
            .map(|s| s.frames.iter().map(|f| f.map.clone()).collect())
            .collect()
    }

    /// Runs `method` over every sequence (one window per sequence, stamps as generated).
    pub fn refine(&self, method: Box<dyn TemporalMethod>) -> Result<Vec<Vec<AnomalyMap>>> {
        let mut sequencer = Sequencer::new(method, FRAME_PERIOD_NS * 3 / 2);
        self.sequences
            .iter()
            .map(|s| run_sequence(&mut sequencer, &s.frames).with_context(|| s.name.clone()))
            .collect()
    }

    /// Writes the TALLO-like layout: masks as `GT/SEQ/masks/NNN.png`, maps as
    /// `MAPS/SEQ/masks/NNN.npy` (f32 HxW, as `stars detect` writes them), features (when
    /// `features` is given) as `FEATURES/SEQ/features/NNN.npy` (f32 C x grid_h x grid_w), and
    /// `MAPS/flicker.json` with the config and seed. `stars eval --gt GT --pred MAPS` and
    /// `stars refine --maps MAPS --features FEATURES` read them.
    pub fn write(&self, gt: &Path, maps: &Path, features: Option<&Path>) -> Result<()> {
        let npy = |path: &Path, data: &[f32], shape: &[usize]| -> Result<()> {
            Tensor::from_slice(data, shape, &Device::Cpu)
                .and_then(|t| t.write_npy(path))
                .with_context(|| format!("writing {}", path.display()))
        };
        let mkdir = |dir: &Path| -> Result<()> {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        };
        for seq in &self.sequences {
            let (mask_dir, map_dir) = (
                gt.join(&seq.name).join("masks"),
                maps.join(&seq.name).join("masks"),
            );
            mkdir(&mask_dir)?;
            mkdir(&map_dir)?;
            let feat_dir = features.map(|f| f.join(&seq.name).join("features"));
            if let Some(dir) = &feat_dir {
                mkdir(dir)?;
            }
            for (t, (frame, mask)) in seq.frames.iter().zip(&seq.masks).enumerate() {
                let m = &frame.map;
                let png = mask_dir.join(format!("{t:03}.png"));
                image::GrayImage::from_raw(m.width as u32, m.height as u32, mask.clone())
                    .context("mask buffer has the map's size")?
                    .save(&png)
                    .with_context(|| format!("writing {}", png.display()))?;
                npy(
                    &map_dir.join(format!("{t:03}.npy")),
                    &m.data,
                    &[m.height, m.width],
                )?;
                if let (Some(dir), Some(f)) = (&feat_dir, &frame.features) {
                    npy(
                        &dir.join(format!("{t:03}.npy")),
                        &f.data,
                        &[f.channels, f.grid_h, f.grid_w],
                    )?;
                }
            }
        }
        let note = serde_json::json!({
            "generator": "stars::temporal::flicker",
            "seed": self.seed,
            "config": self.config,
            "random_backbone": false,
        });
        let path = maps.join("flicker.json");
        std::fs::write(&path, serde_json::to_string_pretty(&note)? + "\n")
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// How a method's maps score on a [`FlickerSet`].
#[derive(Clone, Debug)]
pub struct FlickerScore {
    /// Pixel metrics over every sequence, exact (sort-based) AUROC / AP / FPR@95; AUPRO binned.
    pub metrics: Metrics,
    /// Share of the clean sequences' frames whose map reaches [`ALARM_THRESHOLD`] anywhere:
    /// glints that would raise an alert.
    pub clean_alarm_rate: f64,
    /// Share of the anomalous sequences' frames in which some anomaly pixel reaches
    /// [`ALARM_THRESHOLD`] (dropout frames included).
    pub anomaly_hit_rate: f64,
}

/// Scores `maps` (one per frame, as [`FlickerSet::refine`] returns them) against the set's
/// masks.
pub fn score(set: &FlickerSet, maps: &[Vec<AnomalyMap>]) -> Result<FlickerScore> {
    ensure!(
        maps.len() == set.sequences.len(),
        "{} map sequences for {} sequences",
        maps.len(),
        set.sequences.len()
    );
    let mut eval = Evaluator::new(EvalConfig {
        bins: 1000,
        exact: true,
        ..EvalConfig::default()
    })?;
    let (mut clean, mut alarms, mut anomalous, mut hits) = (0u64, 0u64, 0u64, 0u64);
    for (seq, seq_maps) in set.sequences.iter().zip(maps) {
        ensure!(
            seq_maps.len() == seq.masks.len(),
            "{}: {} maps for {} frames",
            seq.name,
            seq_maps.len(),
            seq.masks.len()
        );
        for (map, mask) in seq_maps.iter().zip(&seq.masks) {
            eval.add_frame(&map.data, map.width, map.height, mask)
                .with_context(|| seq.name.clone())?;
            if seq.anomalous {
                anomalous += 1;
                let hit = map
                    .data
                    .iter()
                    .zip(mask)
                    .any(|(&s, &m)| m == ANOMALY_ID && s >= ALARM_THRESHOLD);
                hits += u64::from(hit);
            } else {
                clean += 1;
                alarms += u64::from(map.data.iter().any(|&s| s >= ALARM_THRESHOLD));
            }
        }
    }
    let rate = |n: u64, d: u64| if d > 0 { n as f64 / d as f64 } else { 0.0 };
    Ok(FlickerScore {
        metrics: eval.finish(),
        clean_alarm_rate: rate(alarms, clean),
        anomaly_hit_rate: rate(hits, anomalous),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_sequences_and_another_seed_does_not() {
        let cfg = FlickerConfig {
            sequences: 2,
            frames: 6,
            ..FlickerConfig::default()
        };
        let a = generate(&cfg, 3).unwrap();
        let b = generate(&cfg, 3).unwrap();
        let c = generate(&cfg, 4).unwrap();
        assert_eq!(a.sequences[0].frames[5].map, b.sequences[0].frames[5].map);
        assert_eq!(a.sequences[1].masks, b.sequences[1].masks);
        assert_ne!(a.sequences[0].frames[0].map, c.sequences[0].frames[0].map);
    }

    #[test]
    fn one_frame_in_three_drops_and_clean_sequences_have_no_anomaly() {
        let set = generate(&FlickerConfig::default(), 1).unwrap();
        for seq in &set.sequences {
            if seq.anomalous {
                for block in seq.dropped.chunks(3) {
                    // A short last block may miss its drawn frame.
                    assert!(block.iter().filter(|&&d| d).count() <= 1);
                }
                assert_eq!(seq.dropped[..9].iter().filter(|&&d| d).count(), 3);
                for (t, mask) in seq.masks.iter().enumerate() {
                    let (inside, peak) = mask
                        .iter()
                        .zip(&seq.frames[t].map.data)
                        .filter(|(&m, _)| m == ANOMALY_ID)
                        .fold((0, 0.0f32), |(n, p), (_, &s)| (n + 1, p.max(s)));
                    assert!(inside > 50, "the anomaly is in every mask");
                    if seq.dropped[t] {
                        assert!(peak <= 0.4, "dropped frame {t} peaks at {peak}");
                    } else {
                        assert!(peak >= 0.58, "frame {t} peaks at {peak}");
                    }
                }
            } else {
                assert!(seq.masks.iter().flatten().all(|&m| m == 0));
                assert!(seq.dropped.iter().all(|&d| !d));
            }
        }
        let glints = set.sequences.iter().flat_map(|s| &s.glint).filter(|&&g| g);
        assert!(glints.count() > 20, "about half of 80 frames hold a glint");
    }

    #[test]
    fn bad_configs_are_errors() {
        for cfg in [
            FlickerConfig {
                frames: 0,
                ..FlickerConfig::default()
            },
            FlickerConfig {
                width: 8,
                ..FlickerConfig::default()
            },
            FlickerConfig {
                peak: [0.9, 0.5],
                ..FlickerConfig::default()
            },
        ] {
            assert!(generate(&cfg, 0).is_err(), "{cfg:?}");
        }
    }
}
