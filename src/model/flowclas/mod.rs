//! FlowCLAS: a normalizing flow over frozen DINOv2 patch tokens, trained with outlier exposure
//! and a contrastive loss (Lee et al., WACV 2026, arXiv 2411.19888; spec in
//! `docs/spec/flowclas.md`).
//!
//! The detector owns a per-pixel LayerNorm, `steps` flow steps (ActNorm -> fixed channel
//! permutation -> one-sided affine coupling), a learned diagonal Gaussian and, for training,
//! a 1x1 projection head. Tensors are `(B, C, H, W)` f32 patch grids.
//!
//! ```text
//! stars train detector --data synth/train --out ckpt --preset small --random-weights
//! stars detect --checkpoint ckpt --data synth/val --out pred --random-weights --gt
//! ```
pub mod backbone;
mod checkpoint;

pub use crate::model::dinov2::Padding;
pub use backbone::{Embedded, FeatureExtractor};

pub use checkpoint::{load, load_meta, save, CheckpointMeta, DETECTOR_JSON, DETECTOR_WEIGHTS};

use std::sync::PoisonError;

use candle_core::{bail, Device, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, Init, Linear, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// Width and depth of the detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Feature channels (the backbone's width).
    pub channels: usize,
    /// Number of flow steps.
    pub steps: usize,
    /// Output width of the contrastive projection head.
    pub proj_dim: usize,
    /// Epsilon of the LayerNorm before the flow.
    pub norm_eps: f64,
}

impl Config {
    /// The official ALLO model: ViT-L features, 16 steps.
    pub fn paper() -> Self {
        Self {
            channels: 1024,
            steps: 16,
            proj_dim: 128,
            norm_eps: 1e-5,
        }
    }

    /// CPU preset on ViT-S features (384 channels), 8 steps.
    pub fn small() -> Self {
        Self {
            channels: 384,
            steps: 8,
            ..Self::paper()
        }
    }

    /// Test preset on the tiny DINOv2 (32 channels), 2 steps.
    pub fn tiny() -> Self {
        Self {
            channels: 32,
            steps: 2,
            proj_dim: 16,
            norm_eps: 1e-5,
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

    /// Channels of each coupling half (the subnet's width).
    pub fn half(&self) -> usize {
        self.channels / 2
    }
}

/// Non-trainable state saved beside the weights: fixed permutations and the ActNorm flag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowState {
    /// One channel permutation per step.
    pub permutations: Vec<Vec<u32>>,
    /// True once ActNorm took its data-dependent init; never re-initialised after that.
    pub actnorm_initialised: bool,
}

impl FlowState {
    /// Fresh state: seeded random permutations, ActNorm not yet initialised.
    pub fn new(cfg: &Config, seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let permutations = (0..cfg.steps)
            .map(|_| {
                let mut p: Vec<u32> = (0..cfg.channels as u32).collect();
                p.shuffle(&mut rng);
                p
            })
            .collect();
        Self {
            permutations,
            actnorm_initialised: false,
        }
    }

    /// Checks the state against the config (a hand-edited or foreign JSON must not panic).
    pub fn validate(&self, cfg: &Config) -> Result<()> {
        if cfg.channels < 2 || cfg.channels % 2 != 0 {
            bail!("channels must be even and >= 2, got {}", cfg.channels)
        }
        if self.permutations.len() != cfg.steps {
            bail!(
                "state has {} permutations for {} flow steps",
                self.permutations.len(),
                cfg.steps
            )
        }
        for (i, p) in self.permutations.iter().enumerate() {
            // Length first: `channels` comes from the same JSON and may be hostile, while the
            // permutation's length is bounded by the file, so it bounds the `seen` allocation.
            if p.len() != cfg.channels {
                bail!(
                    "permutation {i} has {} entries, expected {}",
                    p.len(),
                    cfg.channels
                )
            }
            let mut seen = vec![false; cfg.channels];
            for &c in p {
                match seen.get_mut(c as usize) {
                    Some(s) if !*s => *s = true,
                    _ => bail!(
                        "permutation {i} is not a permutation of 0..{}",
                        cfg.channels
                    ),
                }
            }
        }
        Ok(())
    }
}

/// y = (x - loc) / exp(logscale), per channel; log-det = -sum_c logscale per pixel.
#[derive(Debug, Clone)]
struct ActNorm {
    loc: Tensor,
    logscale: Tensor,
    prefix: String,
}

impl ActNorm {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            loc: vb.get_with_hints(cfg.channels, "loc", Init::Const(0.))?,
            logscale: vb.get_with_hints(cfg.channels, "logscale", Init::Const(0.))?,
            prefix: vb.prefix(),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let y = x
            .broadcast_sub(&channel_view(&self.loc)?)?
            .broadcast_mul(&channel_view(&self.logscale.neg()?.exp()?)?)?;
        Ok((y, self.logscale.sum_all()?.neg()?))
    }

    fn inverse(&self, y: &Tensor) -> Result<Tensor> {
        y.broadcast_mul(&channel_view(&self.logscale.exp()?)?)?
            .broadcast_add(&channel_view(&self.loc)?)
    }

    /// Data-dependent init: loc = per-channel mean, logscale = log per-channel std over
    /// N,H,W (unbiased, as torch's `std`); zero-std channels take the mean of the others.
    fn initialise(&self, x: &Tensor, vars: &VarMap) -> Result<()> {
        let c = x.dim(1)?;
        let flat = x.transpose(0, 1)?.flatten_from(1)?; // (C, N*H*W)
        let n = flat.dim(1)?;
        let mean = flat.mean(1)?;
        let var =
            (flat.broadcast_sub(&mean.unsqueeze(1)?)?.sqr()?.sum(1)? / (n.max(2) - 1) as f64)?;
        let mut std: Vec<f32> = var.sqrt()?.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        let positive: Vec<f32> = std.iter().copied().filter(|s| *s > 0.0).collect();
        let fill = if positive.is_empty() {
            1.0
        } else {
            positive.iter().sum::<f32>() / positive.len() as f32
        };
        for s in std.iter_mut().filter(|s| **s <= 0.0) {
            *s = fill;
        }
        let logscale = Tensor::from_vec(std, c, x.device())?
            .log()?
            .to_dtype(x.dtype())?;
        let data = vars.data().lock().unwrap_or_else(PoisonError::into_inner);
        for (name, value) in [("loc", &mean), ("logscale", &logscale)] {
            let key = format!("{}.{name}", self.prefix);
            match data.get(&key) {
                Some(var) => var.set(value)?,
                None => bail!("actnorm initialisation: no variable `{key}` in the var map"),
            }
        }
        Ok(())
    }
}

/// The coupling subnet: three pre-activation GN -> ReLU -> conv blocks with a skip, then a
/// zero-initialised 1x1 conv to twice the width. No biases; zero padding.
#[derive(Debug, Clone)]
struct Subnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    norm3: GroupNorm,
    conv3: Conv2d,
    out: Conv2d,
}

impl Subnet {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let h = cfg.half();
        let pad1 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let gn = |name: &str| candle_nn::group_norm(1, h, 1e-5, vb.pp(name));
        let out_w =
            vb.pp("out")
                .get_with_hints((cfg.channels, h, 1, 1), "weight", Init::Const(0.))?;
        Ok(Self {
            norm1: gn("norm1")?,
            conv1: candle_nn::conv2d_no_bias(h, h, 3, pad1, vb.pp("conv1"))?,
            norm2: gn("norm2")?,
            conv2: candle_nn::conv2d_no_bias(h, h, 1, Default::default(), vb.pp("conv2"))?,
            norm3: gn("norm3")?,
            conv3: candle_nn::conv2d_no_bias(h, h, 3, pad1, vb.pp("conv3"))?,
            out: Conv2d::new(out_w, None, Default::default()),
        })
    }
}

impl Module for Subnet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(x)?.relu()?)?;
        let h = self.conv2.forward(&self.norm2.forward(&h)?.relu()?)?;
        let h = self.conv3.forward(&self.norm3.forward(&h)?.relu()?)?;
        self.out.forward(&(h + x)?)
    }
}

/// One step: ActNorm -> permutation -> affine coupling on the second half.
#[derive(Debug, Clone)]
struct FlowStep {
    actnorm: ActNorm,
    permutation: Tensor,
    inverse_permutation: Tensor,
    subnet: Subnet,
    half: usize,
}

impl FlowStep {
    fn new(cfg: &Config, permutation: &[u32], vb: VarBuilder) -> Result<Self> {
        let mut inverse = vec![0u32; permutation.len()];
        for (i, &p) in permutation.iter().enumerate() {
            inverse[p as usize] = i as u32;
        }
        let dev = vb.device();
        Ok(Self {
            actnorm: ActNorm::new(cfg, vb.pp("actnorm"))?,
            permutation: Tensor::new(permutation, dev)?,
            inverse_permutation: Tensor::new(inverse, dev)?,
            subnet: Subnet::new(cfg, vb.pp("subnet"))?,
            half: cfg.half(),
        })
    }

    /// Returns y and the per-pixel log-det `(B, H, W)`.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (x, actnorm_logdet) = self.actnorm.forward(x)?;
        let x = x.index_select(&self.permutation, 1)?;
        let (x1, x2) = (
            x.narrow(1, 0, self.half)?,
            x.narrow(1, self.half, self.half)?,
        );
        let (s, t) = self.scale_shift(&x1)?;
        let y2 = (x2 * s.exp()?)?.add(&t)?;
        let logdet = s.sum(1)?.broadcast_add(&actnorm_logdet)?;
        Ok((Tensor::cat(&[&x1, &y2], 1)?, logdet))
    }

    fn inverse(&self, y: &Tensor) -> Result<Tensor> {
        let (y1, y2) = (
            y.narrow(1, 0, self.half)?,
            y.narrow(1, self.half, self.half)?,
        );
        let (s, t) = self.scale_shift(&y1)?;
        let x2 = ((y2 - t)? * s.neg()?.exp()?)?;
        let x = Tensor::cat(&[&y1, &x2], 1)?.index_select(&self.inverse_permutation, 1)?;
        self.actnorm.inverse(&x)
    }

    /// s = 2 tanh(a[:C/2]), t = a[C/2:] with a = subnet(x1).
    fn scale_shift(&self, x1: &Tensor) -> Result<(Tensor, Tensor)> {
        let a = self.subnet.forward(x1)?;
        let s = (a.narrow(1, 0, self.half)?.tanh()? * 2.0)?;
        Ok((s, a.narrow(1, self.half, self.half)?))
    }
}

/// The FlowCLAS detector head.
#[derive(Debug, Clone)]
pub struct FlowClas {
    norm_weight: Tensor,
    norm_bias: Tensor,
    flow: Vec<FlowStep>,
    mu: Tensor,
    log_sigma: Tensor,
    proj: Linear,
    cfg: Config,
}

impl FlowClas {
    /// Builds the detector; `vb` should be backed by a `VarMap` for training.
    pub fn new(cfg: &Config, state: &FlowState, vb: VarBuilder) -> Result<Self> {
        state.validate(cfg)?;
        let c = cfg.channels;
        let norm = vb.pp("norm");
        let base = vb.pp("base");
        Ok(Self {
            norm_weight: norm.get_with_hints(c, "weight", Init::Const(1.))?,
            norm_bias: norm.get_with_hints(c, "bias", Init::Const(0.))?,
            flow: (0..cfg.steps)
                .map(|i| FlowStep::new(cfg, &state.permutations[i], vb.pp("flow").pp(i)))
                .collect::<Result<_>>()?,
            mu: base.get_with_hints(c, "mu", Init::Const(0.))?,
            log_sigma: base.get_with_hints(c, "log_sigma", Init::Const(0.))?,
            proj: candle_nn::linear(c, cfg.proj_dim, vb.pp("proj"))?,
            cfg: cfg.clone(),
        })
    }

    /// ActNorm's data-dependent init from the first batch of raw features; a no-op (returns
    /// false) once `state` says it happened, so loaded checkpoints are never re-initialised.
    pub fn initialise_actnorm(
        &self,
        features: &Tensor,
        state: &mut FlowState,
        vars: &VarMap,
    ) -> Result<bool> {
        if state.actnorm_initialised {
            return Ok(false);
        }
        let mut x = self.normalise(features)?.detach();
        for step in &self.flow {
            step.actnorm.initialise(&x, vars)?;
            x = step.forward(&x)?.0.detach();
        }
        state.actnorm_initialised = true;
        Ok(true)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The trainable per-pixel LayerNorm, `(B, C, H, W)` -> same (differentiable ops only).
    pub fn normalise(&self, features: &Tensor) -> Result<Tensor> {
        let (_, c, _, _) = features.dims4()?;
        if c != self.cfg.channels {
            bail!(
                "features have {c} channels, the detector expects {}",
                self.cfg.channels
            )
        }
        let x = features.to_dtype(self.norm_weight.dtype())?;
        let x = x.broadcast_sub(&x.mean_keepdim(1)?)?;
        let var = x.sqr()?.mean_keepdim(1)?;
        x.broadcast_div(&(var + self.cfg.norm_eps)?.sqrt()?)?
            .broadcast_mul(&channel_view(&self.norm_weight)?)?
            .broadcast_add(&channel_view(&self.norm_bias)?)
    }

    /// Runs the flow on normalised features: returns z and the per-pixel log-det `(B, H, W)`.
    pub fn flow(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, _, h, w) = x.dims4()?;
        let mut logdet = Tensor::zeros((b, h, w), x.dtype(), x.device())?;
        let mut x = x.clone();
        for step in &self.flow {
            let (y, ld) = step.forward(&x)?;
            logdet = (logdet + ld)?;
            x = y;
        }
        Ok((x, logdet))
    }

    /// Inverts [`Self::flow`].
    pub fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        self.flow
            .iter()
            .rev()
            .try_fold(z.clone(), |y, step| step.inverse(&y))
    }

    /// LayerNorm then flow on raw backbone features.
    pub fn forward(&self, features: &Tensor) -> Result<(Tensor, Tensor)> {
        self.flow(&self.normalise(features)?)
    }

    /// Standardised latent u = (z - mu) / sigma.
    pub fn standardise(&self, z: &Tensor) -> Result<Tensor> {
        z.broadcast_sub(&channel_view(&self.mu)?)?
            .broadcast_mul(&channel_view(&self.log_sigma.neg()?.exp()?)?)
    }

    /// Training log-likelihood per pixel without the Jacobian:
    /// -(C/2) ln 2pi - sum log sigma - 1/2 sum u^2, `(B, H, W)`.
    pub fn log_prob(&self, z: &Tensor) -> Result<Tensor> {
        let c = self.cfg.channels as f64;
        let u2 = self.standardise(z)?.sqr()?.sum(1)?;
        let constant = -0.5 * c * (2.0 * std::f64::consts::PI).ln();
        (u2 * -0.5)?.broadcast_sub(&self.log_sigma.sum_all()?)? + constant
    }

    /// Per-patch score l = mean_c(-1/2 u^2 - log sigma), `(B, H, W)` (no constant, no Jacobian).
    pub fn patch_log_likelihood(&self, z: &Tensor) -> Result<Tensor> {
        let u2 = self.standardise(z)?.sqr()?;
        (u2 * -0.5)?
            .broadcast_sub(&channel_view(&self.log_sigma)?)?
            .mean(1)
    }

    /// L2-normalised projection of pixel latents `(N, C)` -> `(N, proj_dim)`.
    pub fn project(&self, z_pixels: &Tensor) -> Result<Tensor> {
        let p = self.proj.forward(z_pixels)?;
        let norm = (p.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?;
        p.broadcast_div(&norm)
    }

    /// Anomaly map M = 1 - bilinear(exp(l)) at the padded input size (the patch grid times
    /// `padding.patch`), cropped back to the frame with `padding`; `(B, padding.height, padding.width)` in [0, 1].
    pub fn anomaly_map(&self, features: &Tensor, padding: Padding) -> Result<Tensor> {
        let (z, _) = self.forward(features)?;
        let p = self.patch_log_likelihood(&z)?.exp()?;
        let (_, h, w) = p.dims3()?;
        let (ph, pw) = (padding.padded_height(), padding.padded_width());
        let patch = padding.patch;
        if patch == 0
            || (ph, pw) != (patch * h, patch * w)
            || padding.top + padding.height > ph
            || padding.left + padding.width > pw
        {
            bail!(
                "padding {padding:?} does not fit a {h}x{w} patch grid ({}x{} pixels)",
                patch * h,
                patch * w
            )
        }
        let dev = p.device();
        let a_h = bilinear_matrix(ph, h, dev)?.narrow(0, padding.top, padding.height)?;
        let a_w = bilinear_matrix(pw, w, dev)?.narrow(0, padding.left, padding.width)?;
        let up = a_h.broadcast_matmul(&p)?.broadcast_matmul(&a_w.t()?)?;
        // exp(l) exceeds 1 only where log sigma < 0 and u ~ 0; clamp keeps the topic's [0, 1].
        up.affine(-1.0, 1.0)?.clamp(0f32, 1f32)
    }
}

/// (C,) -> (1, C, 1, 1) for broadcasting over `(B, C, H, W)`.
fn channel_view(v: &Tensor) -> Result<Tensor> {
    v.reshape((1, (), 1, 1))
}

/// `(out, in)` matrix of PyTorch's bilinear resize with align_corners = false, one axis.
pub fn bilinear_matrix(out: usize, input: usize, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; out * input];
    let scale = input as f64 / out as f64;
    for o in 0..out {
        let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let frac = (src - i0 as f64) as f32;
        m[o * input + i0] += 1.0 - frac;
        m[o * input + i1] += frac;
    }
    Tensor::from_vec(m, (out, input), device)
}
