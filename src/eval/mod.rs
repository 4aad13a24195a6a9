//! Streaming pixel metrics (AUROC, AP, FPR@95, AUPRO), calibration, reports.
//!
//! [`Evaluator`] takes one anomaly map and its ground-truth mask at a time and keeps only
//! per-threshold counts (binned mode, the default: memory independent of the number of pixels),
//! plus every finite score when [`EvalConfig::exact`] asks for the sort-based metrics.
//! [`evaluate_dirs`] runs it over a prediction tree laid out like the masks (see [`pair_frames`]).
//! Definitions follow the FlowCLAS authors (binned torchmetrics curves) and the STARS paper
//! (AUPRO to FPR 0.3); `docs/eval.md` states every convention.
//!
//! Layering: `eval` computes and serialises metrics (JSON, markdown) and never depends on
//! the `viz` or `cli` modules; `viz` may depend on `eval` (it draws the metric plots, see
//! `viz::metric_plots`), and the CLI calls both.
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::tallo::{load_mask, MaskIds};

pub mod aupro;
pub mod binned;
pub mod calibrate;
pub mod exact;
pub mod npy;
pub mod report;

use aupro::ProAccumulator;
use binned::{ClassTable, Histogram};
use exact::StepCurve;

/// TPR at which FPR@95 and the alert threshold are read.
pub const OPERATING_TPR: f64 = 0.95;

/// How to score maps.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    /// Number of thresholds `T` (linspace(0, 1, T)); at least 2.
    pub bins: usize,
    /// Also keep every score and report sort-based AUROC / AP / FPR@95 (scikit-learn's).
    pub exact: bool,
    /// Which mask ids are anomalous and ignored.
    pub ids: MaskIds,
    /// AUPRO integration limit on the FPR axis.
    pub aupro_max_fpr: f64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            bins: 5000,
            exact: false,
            ids: MaskIds::default(),
            aupro_max_fpr: 0.3,
        }
    }
}

/// Pixel and frame counts of an evaluation, to judge what the metrics stand on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Frames added.
    pub frames: u64,
    /// Frames whose mask has at least one anomaly pixel.
    pub anomalous_frames: u64,
    /// Anomalous pixels scored (finite score, anomaly id).
    pub positive_pixels: u64,
    /// Normal pixels scored (finite score, neither anomaly nor ignore id).
    pub negative_pixels: u64,
    /// Pixels with the ignore id (finite score), dropped from every metric.
    pub ignored_pixels: u64,
    /// NaN or infinite scores: left out of every metric, including the frame score.
    pub non_finite_pixels: u64,
    /// Finite scores outside [0, 1]: clipped for the binned metrics, raw in exact mode.
    pub clipped_pixels: u64,
    /// Ground-truth regions (8-connected anomaly components) over all frames.
    pub regions: u64,
}

/// Per-threshold curves of the binned metrics (index k <-> threshold k / (T - 1)).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CurveSet {
    /// ROC and PR curves: thresholds, tpr (= recall), fpr, precision.
    #[serde(flatten)]
    pub rates: binned::Curves,
    /// Mean per-region overlap; `None` without regions.
    pub pro: Option<Vec<f64>>,
}

/// The threshold at which FPR@95 is read and what it achieves.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    /// Pixels with score >= threshold are anomalous.
    pub threshold: f64,
    /// Pixel TPR at the threshold.
    pub tpr: f64,
    /// Pixel FPR at the threshold.
    pub fpr: f64,
}

/// Results of an evaluation. A metric is `None` (JSON null) when undefined; `notes` says why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metrics {
    /// Pixel AUROC.
    pub auroc: Option<f64>,
    /// Pixel average precision.
    pub ap: Option<f64>,
    /// Pixel FPR at TPR 0.95.
    pub fpr95: Option<f64>,
    /// Normalised area under the PRO curve up to `aupro_max_fpr` (always binned).
    pub aupro: Option<f64>,
    /// Frame-level AUROC of the frame scores (max of each map), exact.
    pub image_auroc: Option<f64>,
    /// `"binned"` or `"exact"`: how auroc, ap and fpr95 were computed.
    pub mode: String,
    /// Number of thresholds of the binned curves.
    pub bins: usize,
    /// AUPRO integration limit.
    pub aupro_max_fpr: f64,
    /// The FPR@95 operating point on the binned curve (what `stars calibrate` writes).
    pub operating_point: Option<OperatingPoint>,
    /// What the metrics stand on.
    pub counts: Counts,
    /// Why a metric is undefined, and warnings about the input (NaN, clipping).
    pub notes: Vec<String>,
    /// Binned curves; `None` when the split lacks anomalous or normal pixels.
    pub curves: Option<CurveSet>,
}

/// Streaming accumulator: add frames, then [`Evaluator::finish`].
#[derive(Clone, Debug)]
pub struct Evaluator {
    cfg: EvalConfig,
    classes: ClassTable,
    hist: Histogram,
    pro: ProAccumulator,
    /// Every finite, non-ignored (score, is_anomalous) pixel; exact mode only.
    samples: Option<Vec<(f32, bool)>>,
    /// (frame score, frame is anomalous) for frames with a finite score.
    frame_scores: Vec<(f32, bool)>,
    counts: Counts,
    frames_without_score: u64,
}

impl Evaluator {
    /// A fresh accumulator; fails on fewer than 2 bins or a limit outside (0, 1].
    pub fn new(cfg: EvalConfig) -> Result<Self> {
        ensure!(cfg.bins >= 2, "--bins must be at least 2, got {}", cfg.bins);
        ensure!(
            cfg.bins < 1 << 29,
            "--bins {} is too many (at most 2^29 - 1)",
            cfg.bins
        );
        ensure!(
            cfg.aupro_max_fpr > 0.0 && cfg.aupro_max_fpr <= 1.0,
            "the AUPRO FPR limit must be in (0, 1], got {}",
            cfg.aupro_max_fpr
        );
        ensure!(
            cfg.ids.anomaly != cfg.ids.ignore,
            "the anomaly id and the ignore id are both {}",
            cfg.ids.anomaly
        );
        Ok(Self {
            classes: ClassTable::new(cfg.bins, cfg.ids.anomaly, cfg.ids.ignore),
            hist: Histogram::new(cfg.bins),
            pro: ProAccumulator::new(cfg.bins),
            samples: cfg.exact.then(Vec::new),
            frame_scores: Vec::new(),
            counts: Counts::default(),
            frames_without_score: 0,
            cfg,
        })
    }

    /// The configuration this accumulator was built with.
    pub fn config(&self) -> &EvalConfig {
        &self.cfg
    }

    /// Adds one frame: `scores` (anomaly map) and `mask` (semantic ids) are row-major
    /// `width x height`.
    pub fn add_frame(
        &mut self,
        scores: &[f32],
        width: usize,
        height: usize,
        mask: &[u8],
    ) -> Result<()> {
        let n = width * height;
        ensure!(
            scores.len() == n,
            "anomaly map has {} values, expected {width}x{height} = {n}",
            scores.len()
        );
        ensure!(
            mask.len() == n,
            "mask has {} pixels, expected {width}x{height} = {n}",
            mask.len()
        );
        let anomaly = self.cfg.ids.anomaly;
        let scan = binned::scan_frame(scores, mask, self.cfg.bins, &self.classes);
        self.hist.add(&scan);
        self.counts.frames += 1;
        self.counts.non_finite_pixels += scan.non_finite;
        self.counts.clipped_pixels += scan.clipped;

        // The histogram already knows unless every anomaly pixel had a non-finite score.
        let anomalous = scan.positives() > 0 || (scan.non_finite > 0 && mask.contains(&anomaly));
        if anomalous {
            self.counts.anomalous_frames += 1;
            self.pro.add_frame(scores, mask, width, anomaly);
        }
        if scan.max.is_nan() {
            self.frames_without_score += 1;
        } else {
            self.frame_scores.push((scan.max, anomalous));
        }
        if let Some(samples) = &mut self.samples {
            let ignore = self.cfg.ids.ignore;
            samples.extend(
                scores
                    .iter()
                    .zip(mask)
                    .filter(|(s, &m)| s.is_finite() && m != ignore)
                    .map(|(&s, &m)| (s, m == anomaly)),
            );
        }
        Ok(())
    }

    /// Computes every metric from what was added so far.
    pub fn finish(&self) -> Metrics {
        let mut notes = Vec::new();
        let mut counts = self.counts.clone();
        counts.positive_pixels = self.hist.positives();
        counts.negative_pixels = self.hist.negatives();
        counts.ignored_pixels = self.hist.ignored;
        counts.regions = self.pro.regions();

        if counts.frames == 0 {
            notes.push("no frames were evaluated".to_string());
        } else if counts.positive_pixels == 0 {
            notes.push(
                "no anomalous pixel in the ground truth: AUROC, AP, FPR@95 and AUPRO are undefined"
                    .to_string(),
            );
        } else if counts.negative_pixels == 0 {
            notes.push(
                "no normal pixel in the ground truth: AUROC, AP, FPR@95 and AUPRO are undefined"
                    .to_string(),
            );
        }
        if counts.non_finite_pixels > 0 {
            notes.push(format!(
                "{} NaN/infinite scores were left out of every metric",
                counts.non_finite_pixels
            ));
        }
        if counts.clipped_pixels > 0 {
            notes.push(format!(
                "{} scores outside [0, 1] were clipped for the binned metrics",
                counts.clipped_pixels
            ));
        }

        let rates = self.hist.curves();
        let pro = self.pro.pro_curve();
        let aupro = match (&rates, &pro) {
            (Some(r), Some(p)) => aupro::integrate(&r.fpr, p, self.cfg.aupro_max_fpr),
            _ => None,
        };
        let operating_point = rates.as_ref().and_then(|r| {
            r.operating_index(OPERATING_TPR).map(|k| OperatingPoint {
                threshold: r.thresholds[k],
                tpr: r.tpr[k],
                fpr: r.fpr[k],
            })
        });
        let (auroc, ap, fpr95) = match &self.samples {
            Some(samples) => {
                let step = StepCurve::new(&mut samples.clone());
                (
                    step.auroc(),
                    step.average_precision(),
                    step.fpr_at_tpr(OPERATING_TPR),
                )
            }
            None => match &rates {
                Some(r) => (
                    Some(r.auroc()),
                    Some(r.average_precision()),
                    Some(r.fpr_at_tpr(OPERATING_TPR)),
                ),
                None => (None, None, None),
            },
        };

        let image_auroc = StepCurve::new(&mut self.frame_scores.clone()).auroc();
        if image_auroc.is_none() && counts.frames > 0 {
            notes
                .push("image AUROC needs frames with and without anomalies: undefined".to_string());
        }
        if self.frames_without_score > 0 {
            notes.push(format!(
                "{} frames had no finite score and were left out of the image AUROC",
                self.frames_without_score
            ));
        }

        Metrics {
            auroc,
            ap,
            fpr95,
            aupro,
            image_auroc,
            mode: if self.cfg.exact { "exact" } else { "binned" }.to_string(),
            bins: self.cfg.bins,
            aupro_max_fpr: self.cfg.aupro_max_fpr,
            operating_point,
            counts,
            notes,
            curves: rates.map(|rates| CurveSet { rates, pro }),
        }
    }
}

/// A ground-truth mask and the prediction that scores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FramePair {
    /// `<gt>/<rel>/masks/NNN.png`.
    pub mask: PathBuf,
    /// `<pred>/<rel>/masks/NNN.npy`.
    pub pred: PathBuf,
}

/// Pairs every mask under `gt` with its prediction: the `.npy` at the mask's path relative to
/// `gt`, under `pred`, with the extension swapped (`gt/seq/masks/003.png` <->
/// `pred/seq/masks/003.npy`). `gt` is one sequence (it holds `masks/`) or a split (its
/// subfolders that hold `masks/`); frames are not needed. Frames under `frames/` without a
/// mask are skipped (logged); a mask without a prediction is an error.
pub fn pair_frames(pred: &Path, gt: &Path) -> Result<Vec<FramePair>> {
    if !pred.is_dir() {
        bail!("prediction folder {} does not exist", pred.display());
    }
    let mut pairs = Vec::new();
    let mut missing = Vec::new();
    let mut unmasked = 0usize;
    for seq in mask_sequences(gt).context("reading the ground truth")? {
        let masks = numbered_files(&seq.join("masks"), "png")?;
        if seq.join("frames").is_dir() {
            let frames = numbered_files(&seq.join("frames"), "png")?;
            unmasked += frames
                .iter()
                .filter(|(i, _)| masks.binary_search_by_key(i, |(j, _)| *j).is_err())
                .count();
        }
        for (_, mask) in masks {
            let rel = mask
                .strip_prefix(gt)
                .with_context(|| format!("{} is not under {}", mask.display(), gt.display()))?;
            let pair = FramePair {
                pred: pred.join(rel).with_extension("npy"),
                mask,
            };
            if pair.pred.is_file() {
                pairs.push(pair);
            } else {
                missing.push(pair.pred);
            }
        }
    }
    if let Some(first) = missing.first() {
        bail!(
            "{} of {} masks have no prediction, e.g. {} (predictions are .npy at the masks' relative paths)",
            missing.len(),
            missing.len() + pairs.len(),
            first.display()
        );
    }
    if pairs.is_empty() {
        bail!("no ground-truth masks under {}", gt.display());
    }
    if unmasked > 0 {
        tracing::warn!(
            "{unmasked} frames under {} have no mask and were skipped",
            gt.display()
        );
    }
    Ok(pairs)
}

/// The sequence folders under `root` that hold `sub/`: `root` itself when it does, else its
/// subfolders that do, sorted by name.
pub fn sequence_dirs(root: &Path, sub: &str) -> Result<Vec<PathBuf>> {
    if !root.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    if root.join(sub).is_dir() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("listing {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(sub).is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// The sequences of a ground-truth tree: folders holding `masks/` (see [`sequence_dirs`]).
fn mask_sequences(gt: &Path) -> Result<Vec<PathBuf>> {
    let dirs = sequence_dirs(gt, "masks")?;
    if dirs.is_empty() {
        bail!(
            "{} holds no masks (expected SEQ/masks/NNN.png or SPLIT/SEQ/masks/NNN.png)",
            gt.display()
        );
    }
    Ok(dirs)
}

/// The files `NNN.<ext>` of `dir` (numeric stem, extension matched case-insensitively) as
/// (index, path), sorted by index; other files are ignored.
pub fn numbered_files(dir: &Path, ext: &str) -> Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case(ext))
        {
            if let Some(index) = path.file_stem().and_then(|s| s.to_str()?.parse().ok()) {
                out.push((index, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads an anomaly map `.npy` (f32, or another float type converted to f32) of shape
/// `H x W` (leading unit axes allowed). Returns `(values, width, height)`.
///
/// The header is checked first, against the file's size and, when `expect` gives the mask's
/// `(width, height)`, against it: a corrupt or hostile header is an error, never an allocation
/// of the size it claims.
pub fn load_map(path: &Path, expect: Option<(usize, usize)>) -> Result<(Vec<f32>, usize, usize)> {
    let header = npy::read_header(path)?;
    let dims = &header.shape;
    let (h, w) = match dims.as_slice() {
        [lead @ .., h, w] if lead.iter().all(|&d| d == 1) => (*h, *w),
        _ => bail!("{} has shape {dims:?}, expected HxW", path.display()),
    };
    let kind = header.descr.trim_start_matches(['<', '>', '|', '=']);
    if !kind.starts_with('f') {
        bail!(
            "{} holds {} values, expected float anomaly scores",
            path.display(),
            header.descr
        );
    }
    if let Some((mw, mh)) = expect {
        if (w, h) != (mw, mh) {
            bail!("{} is {w}x{h} but its mask is {mw}x{mh}", path.display());
        }
    }
    let t = Tensor::read_npy(path).with_context(|| format!("reading {}", path.display()))?;
    let values = t
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .with_context(|| format!("reading {}", path.display()))?;
    Ok((values, w, h))
}

/// Loads one pair and adds it to `eval`.
pub fn add_pair(eval: &mut Evaluator, pair: &FramePair) -> Result<()> {
    let mask = load_mask(&pair.mask)?;
    let (mw, mh) = (mask.width() as usize, mask.height() as usize);
    let (scores, width, height) = load_map(&pair.pred, Some((mw, mh)))
        .with_context(|| format!("scoring against {}", pair.mask.display()))?;
    eval.add_frame(&scores, width, height, mask.as_raw())
        .with_context(|| format!("scoring {}", pair.pred.display()))
}

/// Scores every pair with one evaluator, calling `on_frame` after each frame (progress).
pub fn score_pairs(
    pairs: &[FramePair],
    cfg: &EvalConfig,
    mut on_frame: impl FnMut(),
) -> Result<Metrics> {
    let mut eval = Evaluator::new(cfg.clone())?;
    for pair in pairs {
        add_pair(&mut eval, pair)?;
        on_frame();
    }
    Ok(eval.finish())
}

/// Scores every prediction under `pred` against the masks under `gt` (see [`pair_frames`]).
pub fn evaluate_dirs(pred: &Path, gt: &Path, cfg: &EvalConfig) -> Result<Metrics> {
    score_pairs(&pair_frames(pred, gt)?, cfg, || {})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(bins: usize, exact: bool) -> Evaluator {
        Evaluator::new(EvalConfig {
            bins,
            exact,
            ..EvalConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let mut e = eval(10, false);
        let err = e.add_frame(&[0.0; 5], 2, 3, &[0; 6]).unwrap_err();
        assert!(err.to_string().contains("expected 2x3 = 6"), "{err}");
    }

    #[test]
    fn all_normal_split_is_undefined_not_a_crash() {
        let mut e = eval(10, true);
        e.add_frame(&[0.1, 0.2, 0.3, 0.4], 2, 2, &[0, 1, 2, 255])
            .unwrap();
        let m = e.finish();
        assert_eq!((m.auroc, m.ap, m.fpr95, m.aupro), (None, None, None, None));
        assert!(m.curves.is_none());
        assert!(m.notes[0].contains("no anomalous pixel"), "{:?}", m.notes);
        assert_eq!(m.counts.negative_pixels, 3);
        assert_eq!(m.counts.ignored_pixels, 1);
    }
}
