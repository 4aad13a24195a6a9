//! The FlowCLAS training loop: outlier exposure with pasted hard negatives, likelihood +
//! contrastive loss, AdamW with warm-up + cosine (spec §4), on cached backbone features.
//!
//! Each epoch sees every training frame once, as one of `views` fixed augmented views (random
//! crop, H/V flips, one pasted object) chosen by `epoch % views`. Fixing the views is what makes
//! the feature cache work; upstream draws fresh augmentations every time (our deviation).
use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use image::{imageops, GrayImage};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::cache::FeatureCache;
use super::loss::{self, MAX_CONTRAST_PIXELS, NLL_WEIGHT, TAU};
use super::schedule::learning_rate;
use crate::data::paste::{self, ObjectBox, PasteParams, IGNORE, INLIER, OUTLIER};
use crate::data::tallo::{list_sequences, load_mask, load_rgb};
use crate::data::MaskIds;
use crate::model::flowclas::{
    self, CheckpointMeta, Config, FeatureExtractor, FlowClas, FlowState, Padding,
};

/// Channels x patches of the paper's training crop (ViT-L, 546x966 padded -> 39x69).
const PAPER_NLL_TERMS: f64 = 1024.0 * 39.0 * 69.0;

/// Bumped when the view recipe changes, so stale cache entries are never reused.
const VIEW_RECIPE: &str = "flowclas-view-v1";

/// Training settings (stored in the checkpoint).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// Detector preset name (`tiny`, `small`, `paper`).
    pub preset: String,
    /// Epochs in total (a resumed run continues up to this).
    pub epochs: usize,
    /// Frames per batch (each adds one outlier-source view).
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW weight decay on mu, log sigma and the projection weight.
    pub weight_decay: f64,
    /// Fixed augmented views per frame (cycled over epochs).
    pub views: usize,
    /// Training crop `(height, width)`; `None` = the whole frame.
    pub crop: Option<(u32, u32)>,
    /// Seed of permutations, views and pixel sampling.
    pub seed: u64,
    /// Smallest hard-negative component (pixels) used as a paste source.
    pub min_object_pixels: usize,
    /// Weight of L_nll in the total; `None` scales the spec's 1e-6 by
    /// (1024 x 39 x 69) / (C x Hp x Wp). L_nll is a sum over channels and patches, so the spec's
    /// weight only balances the two losses at the paper's width and crop; at 540x960 on ViT-L the
    /// scaled weight is exactly 1e-6.
    pub nll_weight: Option<f64>,
}

impl Settings {
    /// The preset's defaults: spec values for `paper`, shorter runs and crops for CPU presets.
    pub fn preset(name: &str) -> Option<Self> {
        let base = Self {
            preset: name.to_string(),
            epochs: 50,
            batch: 64,
            lr: 1e-5,
            weight_decay: 1e-5,
            views: 4,
            crop: Some((540, 960)),
            seed: 0,
            min_object_pixels: 16,
            nll_weight: None,
        };
        match name {
            "paper" => Some(base),
            // CPU presets: fewer steps need a larger rate to move in a few minutes
            "small" => Some(Self {
                epochs: 10,
                batch: 8,
                lr: 2e-4,
                views: 2,
                crop: Some((224, 224)),
                ..base
            }),
            "tiny" => Some(Self {
                epochs: 30,
                batch: 4,
                lr: 1e-2,
                views: 1,
                crop: None,
                ..base
            }),
            _ => None,
        }
    }
}

/// Mean losses of one epoch.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct EpochLoss {
    /// 1e-6 * L_nll + L_con.
    pub total: f64,
    /// L_nll (unweighted).
    pub nll: f64,
    /// L_con.
    pub contrastive: f64,
}

/// A hard-negative object available as a paste source.
#[derive(Clone, Debug, Serialize)]
struct Source {
    image: PathBuf,
    mask: PathBuf,
    object: ObjectBox,
}

/// A training frame with its mask.
#[derive(Clone, Debug)]
struct TrainFrame {
    image: PathBuf,
    mask: PathBuf,
}

/// One augmented view's recipe; its JSON (with the backbone) is the cache key.
#[derive(Clone, Debug, Serialize)]
struct ViewSpec {
    recipe: &'static str,
    image: PathBuf,
    mask: PathBuf,
    /// top, left, height, width
    crop: [u32; 4],
    hflip: bool,
    vflip: bool,
    /// Pasted object: its source frame, object and paste parameters.
    paste: Option<(Source, PasteParams)>,
    /// For an outlier-source view: label only this object (others ignored).
    source_object: Option<ObjectBox>,
}

/// Trains (or resumes) a detector on the split `data`, writing checkpoints to `out` at the start
/// (untrained) and after every epoch, reporting each step into `progress`
/// ([`crate::progress::Silent`] for none). Returns the mean losses of the epochs run now.
#[allow(clippy::too_many_arguments)]
pub fn train(
    data: &Path,
    out: &Path,
    backbone: &dyn FeatureExtractor,
    backbone_arch: &str,
    settings: &Settings,
    cache: &FeatureCache,
    resume: bool,
    progress: &dyn crate::progress::Progress,
) -> Result<Vec<EpochLoss>> {
    let device = Device::Cpu;
    let ids = MaskIds::default();
    let (frames, sources) = scan(data, ids, settings.min_object_pixels)?;
    let (vars, model, mut meta) = if resume {
        let (model, vars, meta) = flowclas::load(out, &device).context("--resume")?;
        (vars, model, meta)
    } else {
        let cfg = Config::preset(&settings.preset).with_context(|| {
            format!("unknown preset `{}` (tiny, small, paper)", settings.preset)
        })?;
        let state = FlowState::new(&cfg, settings.seed);
        let vars = VarMap::new();
        let model = FlowClas::new(
            &cfg,
            &state,
            VarBuilder::from_varmap(&vars, DType::F32, &device),
        )?;
        seeded_init(&vars, settings.seed)?;
        let meta = CheckpointMeta {
            config: cfg,
            state,
            backbone_arch: backbone_arch.to_string(),
            backbone_weights: backbone.describe(),
            backbone_blocks: backbone.blocks(),
            step: 0,
            epoch: 0,
            training: serde_json::Value::Null,
        };
        (vars, model, meta)
    };
    if model.config().channels != backbone.channels() {
        bail!(
            "the detector expects {} feature channels but the backbone gives {}",
            model.config().channels,
            backbone.channels()
        );
    }
    let (mut decayed, mut plain) = optimisers(&vars, settings)?;
    let steps_per_epoch = frames.len().div_ceil(settings.batch.max(1));
    let total_steps = steps_per_epoch * settings.epochs;
    let mut history: Vec<EpochLoss> = meta
        .training
        .get("epoch_losses")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let mut run_losses = Vec::new();
    if !resume {
        // the untrained detector (initial weights, ActNorm not yet initialised): what
        // `--epochs 0` leaves behind as the baseline "same flow untrained"
        meta.training = serde_json::json!({ "settings": settings, "epoch_losses": history });
        flowclas::save(out, &vars, &meta)?;
    }
    progress.set_length(total_steps.saturating_sub(meta.step) as u64);
    for epoch in meta.epoch..settings.epochs {
        let mut order: Vec<usize> = (0..frames.len()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            settings.seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9),
        );
        order.shuffle(&mut rng);
        let mut sum = EpochLoss::default();
        for batch in order.chunks(settings.batch.max(1)) {
            let variant = epoch % settings.views.max(1);
            let (features, labels) = load_batch(
                batch, variant, &frames, &sources, backbone, settings, cache, &device,
            )?;
            if model.initialise_actnorm(&features, &mut meta.state, &vars)? {
                tracing::info!("actnorm initialised from the first batch");
            }
            let (_, c, hp, wp) = features.dims4()?;
            let nll_weight = settings
                .nll_weight
                .unwrap_or(NLL_WEIGHT * PAPER_NLL_TERMS / (c * hp * wp) as f64);
            let (total, nll, con) = batch_loss(
                &model,
                &features,
                &labels,
                batch.len(),
                nll_weight,
                &mut rng,
            )?;
            let lr = learning_rate(meta.step, total_steps, settings.lr);
            decayed.set_learning_rate(lr);
            plain.set_learning_rate(lr);
            let grads = total.backward()?;
            decayed.step(&grads)?;
            plain.step(&grads)?;
            meta.step += 1;
            let t = total.to_scalar::<f32>()? as f64;
            sum.total += t;
            sum.nll += nll;
            sum.contrastive += con;
            progress.set_message(format!("epoch {} loss {t:.4}", epoch + 1));
            progress.inc(1);
        }
        let n = steps_per_epoch as f64;
        let mean = EpochLoss {
            total: sum.total / n,
            nll: sum.nll / n,
            contrastive: sum.contrastive / n,
        };
        history.push(mean);
        run_losses.push(mean);
        meta.epoch = epoch + 1;
        meta.training = serde_json::json!({ "settings": settings, "epoch_losses": history });
        flowclas::save(out, &vars, &meta)?;
    }
    progress.finish();
    Ok(run_losses)
}

/// Redraws the randomly initialised tensors (subnet convs, projection) from a generator seeded
/// with `seed`, as candle's CPU initialisers cannot be seeded: the same settings give the same
/// run. Distributions as candle's defaults: Kaiming normal (ReLU gain) for weights, uniform
/// +-1/sqrt(fan_in) for the projection bias.
fn seeded_init(vars: &VarMap, seed: u64) -> Result<()> {
    let data = vars.data().lock().unwrap_or_else(PoisonError::into_inner);
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed_1417);
    for name in names {
        let random = [
            "conv1.weight",
            "conv2.weight",
            "conv3.weight",
            "proj.weight",
            "proj.bias",
        ];
        if !random.iter().any(|r| name.ends_with(r)) {
            continue;
        }
        let var = &data[name];
        let fan_in = match var.dims() {
            [_, rest @ ..] if !rest.is_empty() => rest.iter().product::<usize>(),
            _ => data.get("proj.weight").map_or(1, |w| w.dims()[1]),
        } as f64;
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| {
                if name.ends_with("bias") {
                    rng.random_range(-1.0..1.0) / fan_in.sqrt()
                } else {
                    // Box-Muller standard normal, scaled to Kaiming's std sqrt(2 / fan_in)
                    let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
                    (-2.0 * u1.ln()).sqrt()
                        * (std::f64::consts::TAU * u2).cos()
                        * (2.0 / fan_in).sqrt()
                }
            })
            .map(|v| v as f32)
            .collect();
        var.set(&Tensor::from_vec(values, var.shape(), var.device())?)?;
    }
    Ok(())
}

/// Two AdamW optimisers, as candle has no parameter groups: weight decay only on mu, log sigma
/// and the projection weight.
fn optimisers(vars: &VarMap, settings: &Settings) -> Result<(AdamW, AdamW)> {
    let decayed_names = ["base.mu", "base.log_sigma", "proj.weight"];
    let (mut decayed, mut plain) = (Vec::new(), Vec::new());
    for (name, var) in vars
        .data()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        if decayed_names.contains(&name.as_str()) {
            decayed.push(var.clone());
        } else {
            plain.push(var.clone());
        }
    }
    let params = |weight_decay| ParamsAdamW {
        lr: settings.lr,
        weight_decay,
        ..Default::default()
    };
    Ok((
        AdamW::new(decayed, params(settings.weight_decay))?,
        AdamW::new(plain, params(0.0))?,
    ))
}

/// Total loss (differentiable) and the two parts as numbers, for B mixed views followed by B
/// source views with patch labels `(2B, Hp, Wp)` u8 ([`INLIER`], [`OUTLIER`], [`IGNORE`]):
/// `nll_weight` * L_nll + L_con.
pub fn batch_loss(
    model: &FlowClas,
    features: &Tensor,
    labels: &Tensor,
    b: usize,
    nll_weight: f64,
    rng: &mut impl Rng,
) -> Result<(Tensor, f64, f64)> {
    let (z, logdet) = model.forward(features)?;
    let z_mixed = z.narrow(0, 0, b)?;
    let mixed_labels = labels.narrow(0, 0, b)?;
    let valid = mixed_labels.eq(INLIER)?.to_dtype(DType::F32)?;
    let l_nll = loss::nll(&model.log_prob(&z_mixed)?, &logdet.narrow(0, 0, b)?, &valid)?;

    let c = z.dim(1)?;
    let pixels = z.permute((0, 2, 3, 1))?.reshape(((), c))?;
    let flat: Vec<u8> = labels.flatten_all()?.to_vec1()?;
    let half = flat.len() / 2;
    let pick = |from: std::ops::Range<usize>, label: u8| -> Vec<u32> {
        flat[from.clone()]
            .iter()
            .enumerate()
            .filter(|(_, &l)| l == label)
            .map(|(i, _)| (i + from.start) as u32)
            .collect()
    };
    let groups = [
        pick(0..half, INLIER),
        pick(0..half, OUTLIER),
        pick(half..flat.len(), OUTLIER),
    ];
    let n = groups
        .iter()
        .map(Vec::len)
        .min()
        .unwrap_or(0)
        .min(MAX_CONTRAST_PIXELS);
    let l_con = if n == 0 {
        Tensor::zeros((), DType::F32, z.device())?
    } else {
        let mut index = Vec::with_capacity(3 * n);
        for g in &groups {
            index.extend(g.choose_multiple(rng, n).copied());
        }
        let contrast_labels: Vec<u8> = [INLIER, OUTLIER, OUTLIER]
            .iter()
            .flat_map(|&l| std::iter::repeat_n(l, n))
            .collect();
        let index = Tensor::new(index, z.device())?;
        let emb = model.project(&pixels.index_select(&index, 0)?)?;
        loss::contrastive(&emb, &contrast_labels, 2 * n, TAU)?
    };
    let total = ((&l_nll * nll_weight)? + &l_con)?;
    Ok((
        total,
        l_nll.to_scalar::<f32>()? as f64,
        l_con.to_scalar::<f32>()? as f64,
    ))
}

/// Frames with masks, and the hard-negative objects among them.
fn scan(data: &Path, ids: MaskIds, min_pixels: usize) -> Result<(Vec<TrainFrame>, Vec<Source>)> {
    let mut frames = Vec::new();
    let mut sources = Vec::new();
    for seq in list_sequences(data)? {
        for f in &seq.frames {
            let Some(mask_path) = &f.mask else { continue };
            let mask = load_mask(mask_path)?;
            for object in paste::find_objects(&mask, ids.hard_negative, min_pixels) {
                sources.push(Source {
                    image: f.image.clone(),
                    mask: mask_path.clone(),
                    object,
                });
            }
            frames.push(TrainFrame {
                image: f.image.clone(),
                mask: mask_path.clone(),
            });
        }
    }
    if frames.is_empty() {
        bail!("{} has no frames with masks to train on", data.display());
    }
    if sources.is_empty() {
        bail!(
            "{} has no hard-negative objects (mask id {}, >= {min_pixels} px): outlier exposure needs them",
            data.display(),
            ids.hard_negative
        );
    }
    Ok((frames, sources))
}

/// Features `(2B, C, Hp, Wp)` and patch labels `(2B, Hp, Wp)` of a batch: B mixed views, then
/// their B outlier-source views.
#[allow(clippy::too_many_arguments)]
fn load_batch(
    batch: &[usize],
    variant: usize,
    frames: &[TrainFrame],
    sources: &[Source],
    backbone: &dyn FeatureExtractor,
    settings: &Settings,
    cache: &FeatureCache,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let mut mixed = Vec::new();
    let mut source_views = Vec::new();
    for &i in batch {
        let seed = settings.seed ^ ((i as u64) << 20) ^ ((variant as u64) << 52);
        let (m, s) = view_specs(&frames[i], sources, settings, seed)?;
        mixed.push(m);
        source_views.push(s);
    }
    let mut feats = Vec::new();
    let mut labels = Vec::new();
    for spec in mixed.iter().chain(&source_views) {
        let key = format!(
            "{}\n{}\n{}",
            backbone.describe(),
            serde_json::to_string(spec)?,
            content_digest(spec)?
        );
        let ((f, l), _) = cache.get_or_compute(&key, device, || embed_view(spec, backbone))?;
        feats.push(f);
        labels.push(l);
    }
    let shapes: Vec<_> = feats.iter().map(|f| f.dims().to_vec()).collect();
    if shapes.windows(2).any(|w| w[0] != w[1]) {
        bail!("training views have different feature grids {shapes:?}: frames of one split must share a size (or use --crop)");
    }
    Ok((Tensor::stack(&feats, 0)?, Tensor::stack(&labels, 0)?))
}

/// SHA-256 of the bytes of every file a view reads (frame, mask, pasted source frame and mask),
/// so replacing a file at the same path never reuses stale cached features.
fn content_digest(spec: &ViewSpec) -> Result<String> {
    let mut files = vec![spec.image.as_path(), spec.mask.as_path()];
    if let Some((source, _)) = &spec.paste {
        files.push(&source.image);
        files.push(&source.mask);
    }
    super::cache::digest_files(&files)
}

/// Draws the mixed view of `frame` and its outlier-source view.
fn view_specs(
    frame: &TrainFrame,
    sources: &[Source],
    settings: &Settings,
    seed: u64,
) -> Result<(ViewSpec, ViewSpec)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (w, h) = image::image_dimensions(&frame.image)
        .with_context(|| format!("reading {}", frame.image.display()))?;
    let (ch, cw) = settings
        .crop
        .map_or((h, w), |(ch, cw)| (ch.min(h), cw.min(w)));
    let crop = [
        rng.random_range(0..=h - ch),
        rng.random_range(0..=w - cw),
        ch,
        cw,
    ];
    let source = sources.choose(&mut rng).context("no paste sources")?;
    let params = PasteParams::sample(&mut rng, &source.object, (cw, ch));
    let mixed = ViewSpec {
        recipe: VIEW_RECIPE,
        image: frame.image.clone(),
        mask: frame.mask.clone(),
        crop,
        hflip: rng.random_bool(0.5),
        vflip: rng.random_bool(0.5),
        paste: Some((source.clone(), params)),
        source_object: None,
    };
    // the source view: a crop of the same size centred (as far as it fits) on the object
    let (sw, sh) = image::image_dimensions(&source.image)
        .with_context(|| format!("reading {}", source.image.display()))?;
    let (sch, scw) = (ch.min(sh), cw.min(sw));
    let centre = |start: u32, len: u32, crop: u32, total: u32| {
        (start + len / 2).saturating_sub(crop / 2).min(total - crop)
    };
    let o = &source.object;
    let source_view = ViewSpec {
        recipe: VIEW_RECIPE,
        image: source.image.clone(),
        mask: source.mask.clone(),
        crop: [
            centre(o.top, o.height, sch, sh),
            centre(o.left, o.width, scw, sw),
            sch,
            scw,
        ],
        hflip: false,
        vflip: false,
        paste: None,
        source_object: Some(o.clone()),
    };
    Ok((mixed, source_view))
}

/// Renders a view and embeds it: features `(C, Hp, Wp)` and patch labels `(Hp, Wp)` u8.
fn embed_view(spec: &ViewSpec, backbone: &dyn FeatureExtractor) -> Result<(Tensor, Tensor)> {
    let ids = MaskIds::default();
    let image = load_rgb(&spec.image)?;
    let mask = load_mask(&spec.mask)?;
    if mask.dimensions() != image.dimensions() {
        bail!(
            "{} is {:?} but its frame is {:?}",
            spec.mask.display(),
            mask.dimensions(),
            image.dimensions()
        );
    }
    let [top, left, h, w] = spec.crop;
    let mut rgb = imageops::crop_imm(&image, left, top, w, h).to_image();
    let mask = imageops::crop_imm(&mask, left, top, w, h).to_image();
    let mut labels = GrayImage::from_fn(w, h, |x, y| {
        let id = mask.get_pixel(x, y).0[0];
        let label = match &spec.source_object {
            // source view: only the chosen object is an outlier; nothing else is used
            Some(o) => {
                let (fx, fy) = (x + left, y + top);
                let inside =
                    fx >= o.left && fx < o.left + o.width && fy >= o.top && fy < o.top + o.height;
                if inside && id == ids.hard_negative {
                    OUTLIER
                } else {
                    IGNORE
                }
            }
            // native hard negatives, anomalies and ignore pixels are neither clean inliers nor pasted outliers
            None if id == ids.hard_negative || id == ids.anomaly || id == ids.ignore => IGNORE,
            None => INLIER,
        };
        image::Luma([label])
    });
    if spec.hflip {
        imageops::flip_horizontal_in_place(&mut rgb);
        imageops::flip_horizontal_in_place(&mut labels);
    }
    if spec.vflip {
        imageops::flip_vertical_in_place(&mut rgb);
        imageops::flip_vertical_in_place(&mut labels);
    }
    if let Some((source, params)) = &spec.paste {
        let src = load_rgb(&source.image)?;
        let src_mask = load_mask(&source.mask)?;
        let cutout = paste::cut(&src, &src_mask, ids.hard_negative, &source.object);
        paste::paste(&mut rgb, &mut labels, &cutout, params);
    }
    let embedded = backbone.embed(&rgb)?;
    let features = embedded.features.squeeze(0)?;
    let (_, hp, wp) = features.dims3()?;
    let labels = patch_labels(&labels, embedded.padding, (hp, wp), features.device())?;
    Ok((features, labels))
}

/// Pads pixel labels like the image (padding = ignore) and downsamples them nearest (PyTorch's
/// `src = floor(dst * in / out)`) to the patch grid.
fn patch_labels(
    labels: &GrayImage,
    crop: Padding,
    grid: (usize, usize),
    device: &Device,
) -> Result<Tensor> {
    let (ph, pw) = (crop.padded_height(), crop.padded_width());
    let (gh, gw) = grid;
    let mut out = vec![IGNORE; gh * gw];
    for gy in 0..gh {
        for gx in 0..gw {
            let (py, px) = (gy * ph / gh, gx * pw / gw);
            if py >= crop.top
                && py < crop.top + crop.height
                && px >= crop.left
                && px < crop.left + crop.width
            {
                out[gy * gw + gx] = labels
                    .get_pixel((px - crop.left) as u32, (py - crop.top) as u32)
                    .0[0];
            }
        }
    }
    Ok(Tensor::from_vec(out, (gh, gw), device)?)
}
