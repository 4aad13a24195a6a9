//! STARS: the spatio-temporal anomaly refinement adapter (Andeo, "Temporal Anomaly Detection for
//! Space Robotic Inspection", Sec. III; spec in `docs/spec/stars.md`, usage in `docs/refiner.md`).
//!
//! A frozen single-frame detector gives maps M_det in [0, 1]; STARS fuses each map with the
//! frame's DINOv2 patch features, runs a temporal module over a causal window of 3 fused frames
//! and adds a bounded, confidence-gated residual:
//! `M_refined = clamp(M_det + 0.5 sigmoid(w_r) * Delta * U, 0, 1)`.
//!
//! Every frame is encoded once ([`StarsRefiner::encode_t`]: anomaly projection, fusion,
//! confidence) and every window reuses the encodings of its frames ([`StarsRefiner::refine_t`]),
//! so streaming costs one encoding per frame. Resizes are matmuls with bilinear interpolation
//! matrices, so gradients flow through them (candle's `upsample_bilinear2d` has no backward).
//!
//! ```text
//! stars model summary refiner --preset paper
//! stars train refiner --data synth/train --val synth/val --detector ckpt --out refiner \
//!     --preset tiny --random-weights
//! ```
mod checkpoint;
pub mod cost;
mod layers;

pub use checkpoint::{load, load_meta, save, RefinerMeta, REFINER_JSON, REFINER_WEIGHTS};

use std::sync::PoisonError;

use candle_core::{bail, DType, Device, Module, ModuleT, Result, Tensor};
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::model::flowclas::bilinear_matrix;
use layers::{AnomalyProjection, ConfidenceEstimator, Fusion, TemporalModule};

/// Frames per window (the paper's w = 3): t-2, t-1, t; the current frame is the last.
pub const WINDOW: usize = 3;

/// Which parts of STARS are on (the paper's Table II rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// Fusion of the anomaly projection alone, no confidence (U = 1).
    TemporalOnly,
    /// Fusion with DINOv2 features, no confidence (U = 1).
    WithFeatures,
    /// Fusion with DINOv2 features and confidence weighting: full STARS.
    Full,
}

impl Variant {
    /// A variant by its command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "temporal-only" => Some(Self::TemporalOnly),
            "with-features" => Some(Self::WithFeatures),
            "full" => Some(Self::Full),
            _ => None,
        }
    }

    /// Whether the DINOv2 branch is used.
    pub fn uses_features(self) -> bool {
        self != Self::TemporalOnly
    }

    /// Whether the confidence estimator gates the residual.
    pub fn uses_confidence(self) -> bool {
        self == Self::Full
    }
}

/// Largest fused resolution a refiner config may ask for: 8x the paper's 256, so one fused
/// map of the paper's 256 channels stays within 4 GiB of f32.
pub const MAX_RESOLUTION: usize = 2048;

/// Widths and resolution of the adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// DINOv2 feature channels (1024 for ViT-L).
    pub feature_channels: usize,
    /// Output channels of the anomaly projection phi_anom (paper 64).
    pub anomaly_channels: usize,
    /// Width of the first fusion conv (paper 512).
    pub fusion_hidden: usize,
    /// Fused channels, the temporal module's input (paper 256).
    pub fused_channels: usize,
    /// Kernel of both fusion convs (ours: 3, which gives the paper's ~8.4M parameters).
    pub fusion_kernel: usize,
    /// Output channels of the first Conv3d block (bottleneck, ours: 128).
    pub temporal_hidden: usize,
    /// Output channels of the second Conv3d block (ours: 64).
    pub temporal_out: usize,
    /// Hidden width of the frame-attention MLP.
    pub attention_hidden: usize,
    /// Hidden width of the spatial refiner.
    pub refiner_hidden: usize,
    /// Hidden width of the confidence head.
    pub confidence_hidden: usize,
    /// Side R of the square fused resolution (paper 256).
    pub resolution: usize,
    /// Table II ablation switch.
    pub variant: Variant,
}

impl Config {
    /// The paper's adapter on DINOv2-L: 1088 -> 512 -> 256 fused channels at 256 x 256.
    pub fn paper() -> Self {
        Self {
            feature_channels: 1024,
            anomaly_channels: 64,
            fusion_hidden: 512,
            fused_channels: 256,
            fusion_kernel: 3,
            temporal_hidden: 128,
            temporal_out: 64,
            attention_hidden: 16,
            refiner_hidden: 32,
            confidence_hidden: 128,
            resolution: 256,
            variant: Variant::Full,
        }
    }

    /// CPU preset on ViT-S features (384 channels) at 64 x 64.
    pub fn small() -> Self {
        Self {
            feature_channels: 384,
            anomaly_channels: 16,
            fusion_hidden: 64,
            fused_channels: 32,
            fusion_kernel: 3,
            temporal_hidden: 32,
            temporal_out: 16,
            attention_hidden: 8,
            refiner_hidden: 16,
            confidence_hidden: 16,
            resolution: 64,
            variant: Variant::Full,
        }
    }

    /// Test preset on the tiny DINOv2 (32 channels) at 32 x 32.
    pub fn tiny() -> Self {
        Self {
            feature_channels: 32,
            anomaly_channels: 8,
            fusion_hidden: 16,
            fused_channels: 16,
            fusion_kernel: 3,
            temporal_hidden: 8,
            temporal_out: 8,
            attention_hidden: 4,
            refiner_hidden: 8,
            confidence_hidden: 8,
            resolution: 32,
            variant: Variant::Full,
        }
    }

    /// A named preset: `paper`, `small` or `tiny`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "paper" => Some(Self::paper()),
            "small" => Some(Self::small()),
            "tiny" => Some(Self::tiny()),
            _ => None,
        }
    }

    /// Input channels of the fusion: DINOv2 + projection, or the projection alone.
    pub fn fusion_in(&self) -> usize {
        match self.variant.uses_features() {
            true => self.feature_channels + self.anomaly_channels,
            false => self.anomaly_channels,
        }
    }

    /// Rejects zero widths, even kernels and resolutions above [`MAX_RESOLUTION`] (a
    /// hand-edited JSON must not panic, nor make the first frame allocate without bound: the
    /// widths are checked against the stored tensors, the resolution only here).
    pub fn validate(&self) -> Result<()> {
        let widths = [
            ("feature_channels", self.feature_channels),
            ("anomaly_channels", self.anomaly_channels),
            ("fusion_hidden", self.fusion_hidden),
            ("fused_channels", self.fused_channels),
            ("temporal_hidden", self.temporal_hidden),
            ("temporal_out", self.temporal_out),
            ("attention_hidden", self.attention_hidden),
            ("refiner_hidden", self.refiner_hidden),
            ("confidence_hidden", self.confidence_hidden),
            ("resolution", self.resolution),
        ];
        if let Some((name, _)) = widths.iter().find(|(_, v)| *v == 0) {
            bail!("refiner config: {name} must be at least 1")
        }
        if self.resolution > MAX_RESOLUTION {
            bail!(
                "refiner config: resolution {} is above {MAX_RESOLUTION}",
                self.resolution
            )
        }
        if self.fusion_kernel % 2 == 0 {
            bail!(
                "refiner config: fusion_kernel must be odd, got {}",
                self.fusion_kernel
            )
        }
        Ok(())
    }
}

/// One frame's encoding, shared by the (up to three) windows that contain the frame.
#[derive(Debug, Clone)]
pub struct FrameEncoding {
    /// F_fused `(F, Cf, R, R)`.
    pub fused: Tensor,
    /// U at the map's size `(F, 1, H, W)`; `None` when the variant has no confidence.
    pub confidence: Option<Tensor>,
}

/// What the adapter returns for N windows.
#[derive(Debug, Clone)]
pub struct RefinerOutput {
    /// M_refined `(N, 1, H, W)` in [0, 1].
    pub refined: Tensor,
    /// Delta `(N, 1, H, W)` in [-1, 1].
    pub delta: Tensor,
    /// U `(N, 1, H, W)` in [0, 1] (ones without the confidence estimator).
    pub confidence: Tensor,
    /// The fused windows `(N, WINDOW, Cf, R, R)`.
    pub fused: Tensor,
    /// Frame attention `(N, WINDOW)`, rows summing to 1.
    pub attention: Tensor,
    /// g = 0.5 sigmoid(w_r), a scalar tensor.
    pub gate: Tensor,
}

/// The STARS adapter.
#[derive(Debug, Clone)]
pub struct StarsRefiner {
    anomaly: AnomalyProjection,
    fusion: Fusion,
    temporal: TemporalModule,
    confidence: Option<ConfidenceEstimator>,
    /// w_r of the bounded gate.
    residual_weight: Tensor,
    cfg: Config,
}

impl StarsRefiner {
    /// Builds the adapter; `vb` should be backed by a `VarMap` for training.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            anomaly: AnomalyProjection::new(cfg, vb.pp("anomaly"))?,
            fusion: Fusion::new(cfg, vb.pp("fusion"))?,
            temporal: TemporalModule::new(cfg, vb.pp("temporal"))?,
            confidence: match cfg.variant.uses_confidence() {
                true => Some(ConfidenceEstimator::new(cfg, vb.pp("confidence"))?),
                false => None,
            },
            residual_weight: vb.get_with_hints(1, "residual_weight", Init::Const(0.))?,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    /// The device the weights live on (inputs go there too).
    pub fn device(&self) -> &Device {
        self.residual_weight.device()
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// g = 0.5 sigmoid(w_r), so corrections never exceed half of Delta * U.
    pub fn gate(&self) -> Result<Tensor> {
        candle_nn::ops::sigmoid(&self.residual_weight)?.squeeze(0)? * 0.5
    }

    /// Encodes F frames: detector maps `(F, H, W)` and, when the variant uses them, DINOv2 patch
    /// features `(F, C, ceil(H/14), ceil(W/14))` of the centre-padded frames.
    pub fn encode_t(
        &self,
        maps: &Tensor,
        features: Option<&Tensor>,
        train: bool,
    ) -> Result<FrameEncoding> {
        let (f, h, w) = maps.dims3()?;
        check_finite(maps, "detector map")?;
        let dtype = self.residual_weight.dtype();
        let dev = maps.device();
        let r = self.cfg.resolution;
        let maps = maps.to_dtype(dtype)?;
        let a_h = bilinear_matrix(r, h, dev)?.to_dtype(dtype)?;
        let a_w = bilinear_matrix(r, w, dev)?.to_dtype(dtype)?;
        let m = a_h
            .broadcast_matmul(&maps)?
            .broadcast_matmul(&a_w.t()?)?
            .unsqueeze(1)?; // (F, 1, R, R)
        let projected = self.anomaly.forward_t(&m, train)?;
        let dino = match (self.cfg.variant.uses_features(), features) {
            (false, _) => None,
            (true, None) => bail!("the refiner ({:?}) needs DINOv2 features", self.cfg.variant),
            (true, Some(x)) => Some(self.features_at_resolution(x, f)?),
        };
        let fusion_in = match &dino {
            Some(d) => Tensor::cat(&[d, &projected], 1)?,
            None => projected,
        };
        let fused = self.fusion.forward_t(&fusion_in, train)?;
        let confidence = match (&self.confidence, &dino) {
            (Some(head), Some(d)) => Some(upsample(&head.forward(d)?, h, w)?),
            _ => None,
        };
        Ok(FrameEncoding { fused, confidence })
    }

    /// Patch features standardised per patch over channels (the final LayerNorm without its
    /// affine, ours) and resized bilinearly to R x R: `(F, C, R, R)`. The grid spans the whole
    /// frame (the frame was resized to a square before embedding), as the map does.
    fn features_at_resolution(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let (fx, c, gh, gw) = x.dims4()?;
        if fx != frames {
            bail!("{fx} feature frames for {frames} detector maps")
        }
        if c != self.cfg.feature_channels {
            bail!(
                "features have {c} channels, the refiner expects {}",
                self.cfg.feature_channels
            )
        }
        check_finite(x, "features")?;
        let dtype = self.residual_weight.dtype();
        let dev = x.device();
        let x = x.to_dtype(dtype)?;
        let x = x.broadcast_sub(&x.mean_keepdim(1)?)?;
        let x = x.broadcast_div(&(x.sqr()?.mean_keepdim(1)? + 1e-6)?.sqrt()?)?;
        let r = self.cfg.resolution;
        let m_h = bilinear_matrix(r, gh, dev)?.to_dtype(dtype)?;
        let m_w = bilinear_matrix(r, gw, dev)?.to_dtype(dtype)?;
        m_h.broadcast_matmul(&x)?.broadcast_matmul(&m_w.t()?)
    }

    /// Refines N windows of encoded frames: `windows` `(N, WINDOW, Cf, R, R)` (current frame
    /// last), the current frames' detector maps `(N, H, W)` and their confidence `(N, 1, H, W)`.
    pub fn refine_t(
        &self,
        windows: &Tensor,
        current_maps: &Tensor,
        confidence: Option<&Tensor>,
        train: bool,
    ) -> Result<RefinerOutput> {
        let (n, w, cf, r, _) = windows.dims5()?;
        let (nm, h, wd) = current_maps.dims3()?;
        if w != WINDOW || cf != self.cfg.fused_channels || r != self.cfg.resolution || nm != n {
            bail!(
                "refine: windows {:?} and maps {:?} do not fit (N, {WINDOW}, {}, {r2}, {r2}) and (N, H, W)",
                windows.dims(),
                current_maps.dims(),
                self.cfg.fused_channels,
                r2 = self.cfg.resolution
            )
        }
        let temporal = self
            .temporal
            .forward_t(&windows.permute((0, 2, 1, 3, 4))?.contiguous()?, train)?;
        let delta = upsample(&temporal.delta, h, wd)?;
        let confidence = match confidence {
            Some(u) => u.clone(),
            None => delta.ones_like()?,
        };
        let gate = self.gate()?;
        let correction = delta.mul(&confidence)?.broadcast_mul(&gate)?;
        let det = current_maps.to_dtype(delta.dtype())?.unsqueeze(1)?;
        let unclamped = (det + correction)?;
        let refined = if train {
            // Straight-through clamp (ours): the forward value is clamped, but the gradient
            // passes as if it were not, so a pixel pushed past 0 or 1 can still be pulled back
            // (a plain clamp has zero gradient there, and a missed anomaly at 0 stays missed).
            let clamped = unclamped.clamp(0.0, 1.0)?;
            ((clamped - &unclamped)?.detach() + &unclamped)?
        } else {
            unclamped.clamp(0.0, 1.0)?
        };
        Ok(RefinerOutput {
            refined,
            delta,
            confidence,
            fused: windows.clone(),
            attention: temporal.attention,
            gate,
        })
    }

    /// N explicit windows: maps `(N, WINDOW, H, W)`, features `(N, WINDOW, C, gh, gw)`.
    pub fn forward_t(
        &self,
        maps: &Tensor,
        features: Option<&Tensor>,
        train: bool,
    ) -> Result<RefinerOutput> {
        let (n, w, h, wd) = maps.dims4()?;
        if w != WINDOW {
            bail!("windows hold {w} frames, STARS uses {WINDOW}")
        }
        let flat_features = match features {
            Some(x) => {
                let (nf, wf, c, gh, gw) = x.dims5()?;
                if (nf, wf) != (n, w) {
                    bail!("features for {nf}x{wf} frames but maps for {n}x{w}")
                }
                Some(x.reshape((n * w, c, gh, gw))?)
            }
            None => None,
        };
        let enc = self.encode_t(
            &maps.reshape((n * w, h, wd))?,
            flat_features.as_ref(),
            train,
        )?;
        let (_, cf, r, _) = enc.fused.dims4()?;
        let windows = enc.fused.reshape((n, w, cf, r, r))?;
        let current: Vec<u32> = (0..n as u32).map(|i| i * w as u32 + w as u32 - 1).collect();
        let current = Tensor::new(current, maps.device())?;
        let confidence = match &enc.confidence {
            Some(u) => Some(u.index_select(&current, 0)?),
            None => None,
        };
        let current_maps = maps.narrow(1, w - 1, 1)?.squeeze(1)?;
        self.refine_t(&windows, &current_maps, confidence.as_ref(), train)
    }

    /// S whole sequences of T frames, every frame supervised: maps `(S, T, H, W)`, features
    /// `(S, T, C, gh, gw)`. Each frame is encoded once; frame t's window is (t-2, t-1, t) of its
    /// own sequence, repeating the first frame at the start (causal). Returns the S*T outputs
    /// (sequence-major) and the per-frame fused features `(S, T, Cf, R, R)`.
    pub fn forward_sequences_t(
        &self,
        maps: &Tensor,
        features: Option<&Tensor>,
        train: bool,
    ) -> Result<(RefinerOutput, Tensor)> {
        let (s, t, h, w) = maps.dims4()?;
        let flat_features = match features {
            Some(x) => {
                let (sf, tf, c, gh, gw) = x.dims5()?;
                if (sf, tf) != (s, t) {
                    bail!("features for {sf}x{tf} frames but maps for {s}x{t}")
                }
                Some(x.reshape((s * t, c, gh, gw))?)
            }
            None => None,
        };
        let maps = maps.reshape((s * t, h, w))?;
        let enc = self.encode_t(&maps, flat_features.as_ref(), train)?;
        let index: Vec<u32> = (0..s * t)
            .flat_map(|i| {
                let (first, k) = (i - i % t, i % t);
                (0..WINDOW).map(move |j| (first + (k + j + 1).saturating_sub(WINDOW)) as u32)
            })
            .collect();
        let index = Tensor::new(index, maps.device())?;
        let (_, cf, r, _) = enc.fused.dims4()?;
        let windows = enc
            .fused
            .index_select(&index, 0)?
            .reshape((s * t, WINDOW, cf, r, r))?;
        let out = self.refine_t(&windows, &maps, enc.confidence.as_ref(), train)?;
        Ok((out, enc.fused.reshape((s, t, cf, r, r))?))
    }
}

/// Bilinear resize of `(N, C, r, r)` to `(N, C, h, w)` as two matmuls (differentiable).
fn upsample(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, rh, rw) = x.dims4()?;
    let dev = x.device();
    let a_h = bilinear_matrix(h, rh, dev)?.to_dtype(x.dtype())?;
    let a_w = bilinear_matrix(w, rw, dev)?.to_dtype(x.dtype())?;
    a_h.broadcast_matmul(x)?.broadcast_matmul(&a_w.t()?)
}

/// Fails on NaN or infinite values (their sum is not finite).
fn check_finite(x: &Tensor, what: &str) -> Result<()> {
    let sum = x.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
    if !sum.is_finite() {
        bail!("{what} has NaN or infinite values")
    }
    Ok(())
}

/// True for the tensors BatchNorm updates itself (not trained, not counted as parameters).
pub fn is_running_stat(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// Trainable parameters per top-level module (`anomaly`, `fusion`, `temporal`, `confidence`,
/// `residual_weight`), in name order.
pub fn parameter_counts(vars: &VarMap) -> Vec<(String, usize)> {
    let data = vars.data().lock().unwrap_or_else(PoisonError::into_inner);
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for (name, var) in data.iter().filter(|(n, _)| !is_running_stat(n)) {
        let module = name.split('.').next().unwrap_or(name).to_string();
        *counts.entry(module).or_default() += var.elem_count();
    }
    counts.into_iter().collect()
}

/// Redraws every conv and linear weight (Kaiming normal, ReLU gain) and its bias (uniform
/// +-1/sqrt(fan_in)) from a generator seeded with `seed`: candle's CPU initialisers cannot be
/// seeded, and a run must be reproducible. BatchNorm, running stats and w_r keep their constants.
pub fn seeded_init(vars: &VarMap, seed: u64) -> Result<()> {
    let data = vars.data().lock().unwrap_or_else(PoisonError::into_inner);
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x57a2_5eed);
    for name in names {
        let Some(layer) = name.strip_suffix(".weight").or(name.strip_suffix(".bias")) else {
            continue;
        };
        let Some(weight) = data.get(&format!("{layer}.weight")) else {
            continue;
        };
        if weight.rank() < 2 {
            continue; // BatchNorm's affine
        }
        let fan_in = weight.dims()[1..].iter().product::<usize>() as f64;
        let var = &data[name];
        let values: Vec<f64> = (0..var.elem_count())
            .map(|_| {
                if name.ends_with(".bias") {
                    rng.random_range(-1.0..1.0) / fan_in.sqrt()
                } else {
                    // Box-Muller standard normal, scaled to Kaiming's std sqrt(2 / fan_in)
                    let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
                    (-2.0 * u1.ln()).sqrt()
                        * (std::f64::consts::TAU * u2).cos()
                        * (2.0 / fan_in).sqrt()
                }
            })
            .collect();
        let t = Tensor::from_vec(values, var.shape(), &Device::Cpu)?
            .to_dtype(var.dtype())?
            .to_device(var.device())?;
        var.set(&t)?;
    }
    Ok(())
}
