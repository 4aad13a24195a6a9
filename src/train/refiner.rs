//! The STARS training loop (Sec. V-A; spec in `docs/spec/stars.md`, usage in `docs/refiner.md`).
//!
//! The detector and the backbone are frozen, so each frame's detector map and backbone features
//! are computed once and cached on disk ([`FeatureCache`], keyed by the backbone, the detector
//! checkpoint's bytes and the frame's bytes); epochs then only run the adapter. Sequences go in a
//! fixed alternating normal/anomalous order, two per micro-batch (one pair for the dual triplet
//! loss), two micro-batches accumulated per AdamW step (effective batch 4); all frames of a
//! sequence are supervised through causal windows. After each epoch the checkpoint is written
//! and the adapter is scored on the validation split (exact pixel AP on the anomaly id); the best
//! epoch is kept in `OUT/best/` and training stops after `patience` epochs without improvement.
use std::path::Path;
use std::sync::PoisonError;

use anyhow::{bail, ensure, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::cache::{digest_files, FeatureCache};
use super::refiner_loss::{self as loss, MARGIN};
use crate::data::tallo::{list_sequences, Sequence};
use crate::data::MaskIds;
use crate::eval::exact::StepCurve;
use crate::model::flowclas::backbone::{resized_features, REFINER_INPUT_SIZE};
use crate::model::flowclas::{FeatureExtractor, FlowClas};
use crate::model::stars::{
    self, is_running_stat, seeded_init, Config, RefinerMeta, StarsRefiner, Variant,
};
use crate::temporal::Frame;

/// Bumped when what a cache entry holds changes, so stale entries are never reused.
const FRAME_RECIPE: &str = "stars-frame-v2";

/// Folder (inside the output) holding the checkpoint of the best validation epoch.
pub const BEST_DIR: &str = "best";

/// Training settings (stored in the checkpoint).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// Refiner preset name (`tiny`, `small`, `paper`).
    pub preset: String,
    /// Table II ablation switch.
    pub variant: Variant,
    /// Epochs at most (a resumed run continues up to this).
    pub epochs: usize,
    /// Sequences per micro-batch (paper 2).
    pub batch: usize,
    /// Micro-batches accumulated per optimiser step (paper 2).
    pub accumulation: usize,
    /// AdamW learning rate (paper 5e-5).
    pub lr: f64,
    /// AdamW weight decay (paper 0.01).
    pub weight_decay: f64,
    /// Epochs without a better validation AP before stopping (paper 10).
    pub patience: usize,
    /// Epochs over which lambda_t ramps from 0 to 0.3 (paper 2).
    pub temporal_ramp_epochs: f64,
    /// Seed of the initial weights.
    pub seed: u64,
}

impl Settings {
    /// The preset's defaults: the paper's for `paper`; CPU presets take a larger rate (fewer,
    /// shorter runs) and less patience.
    pub fn preset(name: &str) -> Option<Self> {
        let base = Self {
            preset: name.to_string(),
            variant: Variant::Full,
            epochs: 50,
            batch: 2,
            accumulation: 2,
            lr: 5e-5,
            weight_decay: 0.01,
            patience: 10,
            temporal_ramp_epochs: 2.0,
            seed: 0,
        };
        match name {
            "paper" => Some(base),
            "small" => Some(Self {
                epochs: 20,
                lr: 1e-3,
                patience: 5,
                ..base
            }),
            "tiny" => Some(Self {
                epochs: 4,
                lr: 1e-3,
                patience: 2,
                ..base
            }),
            _ => None,
        }
    }
}

/// Mean losses of one epoch and the validation AP after it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Eq. 9 total.
    pub total: f64,
    /// L_contrast (unweighted).
    pub contrast: f64,
    /// L_temp (unweighted).
    pub temporal: f64,
    /// L_corr (unweighted).
    pub correction: f64,
    /// Exact pixel AP of the refined validation maps (anomaly id); `None` without a split.
    pub val_ap: Option<f64>,
}

/// What a run did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Every epoch so far (resumed runs include the earlier ones).
    pub epochs: Vec<EpochRecord>,
    /// Exact pixel AP of the detector's own validation maps (the bar STARS must clear).
    pub detector_val_ap: Option<f64>,
    /// The epoch with the best validation AP, and that AP.
    pub best: Option<(usize, f64)>,
    /// True when early stopping ended the run before `epochs`.
    pub stopped_early: bool,
}

/// The frozen stages the adapter learns on.
pub struct Frozen<'a> {
    /// The detector.
    pub detector: &'a FlowClas,
    /// Its checkpoint directory (its weights' bytes key the cache).
    pub detector_dir: &'a Path,
    /// The backbone the detector was trained on.
    pub backbone: &'a dyn FeatureExtractor,
    /// The backbone's architecture name (`tiny`, `vit_small`, `vit_large`).
    pub backbone_arch: &'a str,
}

/// One sequence ready for the adapter: detector maps `(T, H, W)`, features `(T, C, gh, gw)`,
/// targets and validity `(T, 1, H, W)` f32, and whether it holds a foreign object.
#[derive(Clone, Debug)]
pub struct TrainingSequence {
    maps: Tensor,
    features: Tensor,
    target: Tensor,
    valid: Tensor,
    /// Anomaly ids per pixel (validation scoring), `(T, H, W)` u8.
    mask: Tensor,
    anomalous: bool,
}

/// Trains (or resumes) a refiner on `data` (validating on `val` when given), writing
/// checkpoints into `out` after every epoch.
#[allow(clippy::too_many_arguments)]
pub fn train(
    data: &Path,
    val: Option<&Path>,
    out: &Path,
    frozen: &Frozen,
    settings: &Settings,
    cache: &FeatureCache,
    resume: bool,
    bar: &dyn crate::progress::Progress,
) -> Result<Report> {
    let device = Device::Cpu;
    let ids = MaskIds::default();
    let (vars, model, mut meta) = if resume {
        let (model, vars, meta) = stars::load(out, &device).context("--resume")?;
        (vars, model, meta)
    } else {
        let cfg = Config {
            variant: settings.variant,
            ..Config::preset(&settings.preset).with_context(|| {
                format!("unknown preset `{}` (tiny, small, paper)", settings.preset)
            })?
        };
        let vars = VarMap::new();
        let model = StarsRefiner::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &device))?;
        seeded_init(&vars, settings.seed)?;
        let meta = RefinerMeta {
            config: cfg,
            backbone_arch: frozen.backbone_arch.to_string(),
            backbone_weights: frozen.backbone.describe(),
            random_backbone: frozen.backbone.is_random(),
            detector: frozen.detector_dir.display().to_string(),
            step: 0,
            epoch: 0,
            training: serde_json::Value::Null,
        };
        (vars, model, meta)
    };
    let cfg = model.config().clone();
    if cfg.variant.uses_features() && cfg.feature_channels != frozen.backbone.channels() {
        bail!(
            "the refiner preset expects {} feature channels but the backbone gives {} (pick the preset of the detector's backbone)",
            cfg.feature_channels,
            frozen.backbone.channels()
        );
    }
    let detector_digest = digest_files(&[&frozen
        .detector_dir
        .join(crate::model::flowclas::DETECTOR_WEIGHTS)])?;
    let train_seqs = split_in_training_order(data, ids)?;
    let val_seqs = match val {
        Some(v) => list_sequences(v)?,
        None => Vec::new(),
    };
    let prepare = |seq: &Sequence| prepare(seq, frozen, &detector_digest, cache, ids, &device);
    let train_item = |i: usize| prepare(&train_seqs[i]);
    let val_item = |i: usize| prepare(&val_seqs[i]);
    optimise(
        &model,
        &vars,
        &mut meta,
        settings,
        (train_seqs.len(), &train_item),
        (val_seqs.len(), &val_item),
        resume,
        Some(out),
        bar,
    )
}

/// Trains a fresh refiner of `cfg` on sequences held in memory (maps that need no detector,
/// such as [`crate::temporal::flicker`]'s), validating on `val` after each epoch and keeping the
/// weights of the best validation epoch. Nothing is written to disk.
pub fn fit(
    cfg: &Config,
    train: &[TrainingSequence],
    val: &[TrainingSequence],
    settings: &Settings,
    bar: &dyn crate::progress::Progress,
) -> Result<(StarsRefiner, Report)> {
    let device = Device::Cpu;
    let vars = VarMap::new();
    let model = StarsRefiner::new(cfg, VarBuilder::from_varmap(&vars, DType::F32, &device))?;
    seeded_init(&vars, settings.seed)?;
    let mut meta = RefinerMeta {
        config: cfg.clone(),
        backbone_arch: "none".into(),
        backbone_weights: "in-memory sequences".into(),
        random_backbone: false,
        detector: "in-memory sequences".into(),
        step: 0,
        epoch: 0,
        training: serde_json::Value::Null,
    };
    let order = alternate(train.iter().collect(), |s| s.anomalous);
    ensure!(!order.is_empty(), "no sequences to train on");
    let train_item = |i: usize| Ok(order[i].clone());
    let val_item = |i: usize| Ok(val[i].clone());
    let report = optimise(
        &model,
        &vars,
        &mut meta,
        settings,
        (order.len(), &train_item),
        (val.len(), &val_item),
        false,
        None,
        bar,
    )?;
    Ok((model, report))
}

/// A source of sequences by index: how many, and how to get the i-th.
type Items<'a> = (usize, &'a dyn Fn(usize) -> Result<TrainingSequence>);

/// The epochs: AdamW with accumulation, validation AP after each epoch, early stopping; with
/// `out`, the checkpoint after every epoch and the best one in `out/best`.
#[allow(clippy::too_many_arguments)]
fn optimise(
    model: &StarsRefiner,
    vars: &VarMap,
    meta: &mut RefinerMeta,
    settings: &Settings,
    (n_train, train_item): Items,
    (n_val, val_item): Items,
    resume: bool,
    out: Option<&Path>,
    bar: &dyn crate::progress::Progress,
) -> Result<Report> {
    let ids = MaskIds::default();
    let mut report: Report = meta
        .training
        .get("report")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or(Report {
            epochs: Vec::new(),
            detector_val_ap: None,
            best: None,
            stopped_early: false,
        });
    let batch = settings.batch.max(1);
    let accumulation = settings.accumulation.max(1);
    let micro_batches = n_train.div_ceil(batch);
    let steps_per_epoch = micro_batches.div_ceil(accumulation);
    let remaining = settings.epochs.saturating_sub(meta.epoch);
    bar.set_length((remaining * (micro_batches + n_val)) as u64);
    if report.detector_val_ap.is_none() && n_val > 0 {
        report.detector_val_ap = validation_ap(None, n_val, val_item, ids)?;
    }
    let params: Vec<_> = {
        let data = vars.data().lock().unwrap_or_else(PoisonError::into_inner);
        data.iter()
            .filter(|(n, _)| !is_running_stat(n))
            .map(|(_, v)| v.clone())
            .collect()
    };
    let mut opt = AdamW::new(
        params.clone(),
        ParamsAdamW {
            lr: settings.lr,
            weight_decay: settings.weight_decay,
            ..Default::default()
        },
    )?;
    let save = |meta: &mut RefinerMeta, report: &Report, dir: Option<&Path>| -> Result<()> {
        meta.training = serde_json::json!({ "settings": settings, "report": report });
        match dir {
            Some(dir) => stars::save(dir, vars, meta),
            None => Ok(()),
        }
    };
    // Without a folder to write to, the best epoch's weights are kept in memory.
    let mut best_weights: Option<Vec<(Var, Tensor)>> = None;
    if !resume {
        save(meta, &report, out)?;
    }
    for epoch in meta.epoch..settings.epochs {
        if let Some((best_epoch, _)) = report.best {
            if epoch >= best_epoch + settings.patience {
                report.stopped_early = true;
                break;
            }
        }
        let mut sums = [0f64; 4];
        let mut acc: Option<GradStore> = None;
        let mut in_step = 0;
        for i in 0..micro_batches {
            let seqs = (i * batch..((i + 1) * batch).min(n_train))
                .map(train_item)
                .collect::<Result<Vec<_>>>()?;
            let progress = epoch as f64 + i as f64 / micro_batches as f64;
            let lambda_t = loss::temporal_weight(progress, settings.temporal_ramp_epochs);
            let parts = batch_loss(model, &seqs, lambda_t)?;
            let grads = (&parts[0] / accumulation as f64)?.backward()?;
            acc = Some(match acc {
                None => grads,
                Some(a) => add_grads(a, grads, &params)?,
            });
            for (s, p) in sums.iter_mut().zip(&parts) {
                *s += p.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            }
            in_step += 1;
            if in_step == accumulation || i + 1 == micro_batches {
                opt.step(&acc.take().context("no gradients were accumulated")?)?;
                meta.step += 1;
                in_step = 0;
            }
            bar.set_message(format!(
                "epoch {} loss {:.4} (corr {:.4} temp {:.4} con {:.4})",
                epoch + 1,
                sums[0] / (i + 1) as f64,
                sums[3] / (i + 1) as f64,
                sums[2] / (i + 1) as f64,
                sums[1] / (i + 1) as f64
            ));
            bar.inc(1);
        }
        let n = micro_batches.max(1) as f64;
        let val_ap = match n_val {
            0 => None,
            _ => validation_ap(Some(model), n_val, val_item, ids)?,
        };
        bar.inc(n_val as u64);
        report.epochs.push(EpochRecord {
            epoch: epoch + 1,
            total: sums[0] / n,
            contrast: sums[1] / n,
            temporal: sums[2] / n,
            correction: sums[3] / n,
            val_ap,
        });
        meta.epoch = epoch + 1;
        let improved = match (val_ap, report.best) {
            (Some(ap), Some((_, best))) if ap > best => Some(ap),
            (Some(ap), None) => Some(ap),
            _ => None,
        };
        if let Some(ap) = improved {
            report.best = Some((epoch + 1, ap));
            match out {
                Some(out) => save(meta, &report, Some(&out.join(BEST_DIR)))?,
                None => best_weights = Some(snapshot(vars)?),
            }
        }
        save(meta, &report, out)?;
        tracing::info!(
            "epoch {}: {} steps of {steps_per_epoch}",
            epoch + 1,
            meta.step
        );
    }
    if report.stopped_early {
        save(meta, &report, out)?;
    }
    if let Some(weights) = best_weights {
        for (var, value) in weights {
            var.set(&value)?;
        }
    }
    bar.finish();
    Ok(report)
}

/// A copy of every variable's current value (parameters and running statistics).
fn snapshot(vars: &VarMap) -> Result<Vec<(Var, Tensor)>> {
    let data = vars.data().lock().unwrap_or_else(PoisonError::into_inner);
    data.values()
        .map(|v| Ok((v.clone(), v.as_tensor().copy()?)))
        .collect()
}

/// Adds the gradients of `more` into `acc`, variable by variable.
fn add_grads(mut acc: GradStore, mut more: GradStore, params: &[Var]) -> Result<GradStore> {
    for var in params {
        let Some(b) = more.remove(var.as_tensor()) else {
            continue;
        };
        let sum = match acc.get(var.as_tensor()) {
            Some(a) => (a + b)?,
            None => b,
        };
        acc.insert(var.as_tensor(), sum);
    }
    Ok(acc)
}

/// Eq. 9 over one micro-batch of sequences: returns `[total, L_contrast, L_temp, L_corr]`
/// (the total differentiable, the parts for reporting).
fn batch_loss(
    model: &StarsRefiner,
    seqs: &[TrainingSequence],
    lambda_t: f64,
) -> Result<[Tensor; 4]> {
    let stack = |f: fn(&TrainingSequence) -> &Tensor| -> Result<Tensor> {
        Ok(Tensor::stack(&seqs.iter().map(f).collect::<Vec<_>>(), 0)?)
    };
    let shapes: Vec<_> = seqs.iter().map(|s| s.maps.dims().to_vec()).collect();
    if shapes.windows(2).any(|w| w[0] != w[1]) {
        bail!("sequences of one batch differ in frames or size {shapes:?}; use --batch 1")
    }
    let maps = stack(|s| &s.maps)?;
    let features = match model.config().variant.uses_features() {
        true => Some(stack(|s| &s.features)?),
        false => None,
    };
    let (out, fused) = model.forward_sequences_t(&maps, features.as_ref(), true)?;
    let flat = |t: Tensor| -> Result<Tensor> { Ok(t.flatten_to(1)?) };
    let corr = loss::correction(
        &out.refined,
        &flat(maps)?.unsqueeze(1)?,
        &flat(stack(|s| &s.target)?)?,
        &flat(stack(|s| &s.valid)?)?,
    )?;
    let s = seqs.len();
    let mut temporal = Tensor::zeros((), DType::F32, maps_device(seqs))?;
    for i in 0..s {
        temporal = (temporal + loss::temporal_consistency(&fused.get(i)?)?)?;
    }
    let temporal = (temporal / s as f64)?;
    let contrast = contrast(&fused, seqs)?;
    let total = loss::total(&contrast, &temporal, &corr.total, lambda_t)?;
    Ok([total, contrast, temporal, corr.total])
}

fn maps_device(seqs: &[TrainingSequence]) -> &Device {
    seqs[0].maps.device()
}

/// Eq. 6 on sequence embeddings (fused features pooled over frames and space): the first normal
/// sequence is the anchor, the first anomalous one the negative; the positives are two other
/// normal sequences of the batch, or (ours) when there are none the anchor's even and odd frames
/// pooled apart. Zero when the batch lacks a normal or an anomalous sequence.
fn contrast(fused: &Tensor, seqs: &[TrainingSequence]) -> Result<Tensor> {
    let (_, t, _, _, _) = fused.dims5()?;
    // (k, Cf, R, R) frames of sequence i -> (Cf,)
    let pool = |i: usize, frames: &[usize]| -> Result<Tensor> {
        let idx: Vec<u32> = frames.iter().map(|&f| f as u32).collect();
        let idx = Tensor::new(idx, fused.device())?;
        Ok(fused
            .get(i)?
            .index_select(&idx, 0)?
            .transpose(0, 1)?
            .flatten_from(1)?
            .mean(1)?)
    };
    let all: Vec<usize> = (0..t).collect();
    let normals: Vec<usize> = (0..seqs.len()).filter(|&i| !seqs[i].anomalous).collect();
    let Some(&negative) = seqs.iter().position(|s| s.anomalous).as_ref() else {
        return Ok(Tensor::zeros((), DType::F32, fused.device())?);
    };
    let Some(&anchor) = normals.first() else {
        return Ok(Tensor::zeros((), DType::F32, fused.device())?);
    };
    let a = pool(anchor, &all)?;
    let n = pool(negative, &all)?;
    let (p1, p2) = if normals.len() >= 3 {
        (pool(normals[1], &all)?, pool(normals[2], &all)?)
    } else {
        let even: Vec<usize> = (0..t).step_by(2).collect();
        let odd: Vec<usize> = (1..t).step_by(2).collect();
        let odd = if odd.is_empty() { even.clone() } else { odd };
        (pool(anchor, &even)?, pool(anchor, &odd)?)
    };
    Ok(loss::dual_triplet(&a, [&p1, &p2], &n, MARGIN)?)
}

/// Exact pixel AP (anomaly id positive, ignore id dropped) of the refined maps, or of the
/// detector's own maps when `model` is `None`; `None` when the split has no anomalous pixel.
fn validation_ap(
    model: Option<&StarsRefiner>,
    n_val: usize,
    val_item: &dyn Fn(usize) -> Result<TrainingSequence>,
    ids: MaskIds,
) -> Result<Option<f64>> {
    let mut samples: Vec<(f32, bool)> = Vec::new();
    for i in 0..n_val {
        let p = val_item(i)?;
        let scores = match model {
            Some(m) => {
                let features = match m.config().variant.uses_features() {
                    true => Some(p.features.unsqueeze(0)?),
                    false => None,
                };
                let (out, _) =
                    m.forward_sequences_t(&p.maps.unsqueeze(0)?, features.as_ref(), false)?;
                out.refined.flatten_all()?
            }
            None => p.maps.flatten_all()?,
        };
        let scores: Vec<f32> = scores.to_dtype(DType::F32)?.to_vec1()?;
        let mask: Vec<u8> = p.mask.flatten_all()?.to_vec1()?;
        samples.extend(
            scores
                .iter()
                .zip(&mask)
                .filter(|(s, &m)| s.is_finite() && m != ids.ignore)
                .map(|(&s, &m)| (s, m == ids.anomaly)),
        );
    }
    Ok(StepCurve::new(&mut samples).average_precision())
}

/// The split's sequences in the training order of [`alternate`]. A sequence is anomalous when
/// a mask holds an anomaly or a hard-negative pixel.
fn split_in_training_order(data: &Path, ids: MaskIds) -> Result<Vec<Sequence>> {
    let mut labelled = Vec::new();
    for seq in list_sequences(data)? {
        if seq.frames.iter().any(|f| f.mask.is_none()) {
            bail!(
                "{} has frames without masks: training needs every mask",
                seq.dir.display()
            );
        }
        let foreign = (0..seq.frames.len()).try_fold(false, |found, i| -> Result<bool> {
            if found {
                return Ok(true);
            }
            let mask = seq.load_mask(i)?;
            Ok(mask
                .pixels()
                .any(|p| p.0[0] == ids.anomaly || p.0[0] == ids.hard_negative))
        })?;
        labelled.push((seq, foreign));
    }
    if labelled.is_empty() {
        bail!("{} has no sequences to train on", data.display());
    }
    Ok(alternate(labelled, |(_, foreign)| *foreign)
        .into_iter()
        .map(|(seq, _)| seq)
        .collect())
}

/// A fixed alternating order: normal, anomalous, normal, ... (the surplus of either kind at the
/// end), each kind in its given order.
fn alternate<T>(items: Vec<T>, anomalous: impl Fn(&T) -> bool) -> Vec<T> {
    let (a, n): (Vec<T>, Vec<T>) = items.into_iter().partition(|t| anomalous(t));
    let mut order = Vec::with_capacity(a.len() + n.len());
    let (mut n, mut a) = (n.into_iter(), a.into_iter());
    loop {
        match (n.next(), a.next()) {
            (None, None) => break,
            (x, y) => order.extend(x.into_iter().chain(y)),
        }
    }
    order
}

/// Loads a sequence's frozen-stage outputs (from the cache, computing misses) and its targets:
/// anomaly and hard-negative pixels are positives, ignore pixels are invalid.
fn prepare(
    seq: &Sequence,
    frozen: &Frozen,
    detector_digest: &str,
    cache: &FeatureCache,
    ids: MaskIds,
    device: &Device,
) -> Result<TrainingSequence> {
    let (mut maps, mut feats, mut masks) = (Vec::new(), Vec::new(), Vec::new());
    for (i, frame) in seq.frames.iter().enumerate() {
        let key = format!(
            "{FRAME_RECIPE}\n{}\n{detector_digest}\n{}",
            frozen.backbone.describe(),
            digest_files(&[&frame.image])?
        );
        // the cache's second slot holds the detector map (H, W) instead of patch labels
        let ((features, map), _) = cache.get_or_compute(&key, device, || {
            let image = seq.load_image(i)?;
            let embedded = frozen.backbone.embed(&image)?;
            let map = frozen
                .detector
                .anomaly_map(&embedded.features, embedded.padding)?
                .squeeze(0)?;
            let features = resized_features(frozen.backbone, &image, REFINER_INPUT_SIZE)?;
            Ok((features.squeeze(0)?, map))
        })?;
        let mask = seq.load_mask(i)?;
        let (w, h) = mask.dimensions();
        if map.dims() != [h as usize, w as usize] {
            bail!(
                "{}: detector map {:?} does not match the {w}x{h} mask",
                frame.image.display(),
                map.dims()
            );
        }
        masks.push(mask.into_raw());
        maps.push(map);
        feats.push(features);
    }
    TrainingSequence::assemble(maps, feats, masks, ids)
}

impl TrainingSequence {
    /// A sequence held in memory: its frames' maps and features (every frame must have
    /// features) and each frame's row-major mask ids.
    pub fn from_frames(frames: &[Frame], masks: &[Vec<u8>], ids: MaskIds) -> Result<Self> {
        ensure!(
            !frames.is_empty() && frames.len() == masks.len(),
            "{} frames with {} masks",
            frames.len(),
            masks.len()
        );
        let device = Device::Cpu;
        let (mut maps, mut feats) = (Vec::new(), Vec::new());
        for (t, frame) in frames.iter().enumerate() {
            let m = &frame.map;
            ensure!(
                masks[t].len() == m.width * m.height,
                "frame {t}: a {}x{} map with {} mask pixels",
                m.width,
                m.height,
                masks[t].len()
            );
            let f = frame
                .features
                .as_ref()
                .with_context(|| format!("frame {t} has no features"))?;
            maps.push(Tensor::from_slice(&m.data, (m.height, m.width), &device)?);
            feats.push(Tensor::from_slice(
                &f.data,
                (f.channels, f.grid_h, f.grid_w),
                &device,
            )?);
        }
        Self::assemble(maps, feats, masks.to_vec(), ids)
    }

    /// Stacks per-frame maps `(H, W)`, features and masks, deriving the targets: anomaly and
    /// hard-negative pixels are positives, ignore pixels are invalid.
    fn assemble(
        maps: Vec<Tensor>,
        feats: Vec<Tensor>,
        masks: Vec<Vec<u8>>,
        ids: MaskIds,
    ) -> Result<Self> {
        let (h, w) = maps[0].dims2()?;
        let device = maps[0].device().clone();
        let (mut targets, mut valids, mut mask_tensors) = (Vec::new(), Vec::new(), Vec::new());
        let mut anomalous = false;
        for raw in masks {
            let foreign = |m: u8| m == ids.anomaly || m == ids.hard_negative;
            anomalous |= raw.iter().any(|&m| foreign(m));
            let target: Vec<f32> = raw.iter().map(|&m| f32::from(foreign(m))).collect();
            let valid: Vec<f32> = raw.iter().map(|&m| f32::from(m != ids.ignore)).collect();
            targets.push(Tensor::from_vec(target, (1, h, w), &device)?);
            valids.push(Tensor::from_vec(valid, (1, h, w), &device)?);
            mask_tensors.push(Tensor::from_vec(raw, (h, w), &device)?);
        }
        Ok(Self {
            maps: Tensor::stack(&maps, 0)?,
            features: Tensor::stack(&feats, 0)?,
            target: Tensor::stack(&targets, 0)?,
            valid: Tensor::stack(&valids, 0)?,
            mask: Tensor::stack(&mask_tensors, 0)?,
            anomalous,
        })
    }
}
