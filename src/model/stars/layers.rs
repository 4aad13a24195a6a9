//! The STARS layer families: anomaly projection and fusion (per frame), the temporal module
//! (per window), and the confidence estimator (per frame). Field names are checkpoint keys.
use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, Linear, VarBuilder};

use super::{Config, WINDOW};
use crate::model::conv3d::{
    batch_norm3d, conv3d, conv3d_no_bias, BatchNorm3d, Conv3d, Conv3dConfig,
};

fn conv2d(in_c: usize, out_c: usize, k: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        ..Default::default()
    };
    candle_nn::conv2d(in_c, out_c, k, cfg, vb)
}

fn batch_norm(channels: usize, vb: VarBuilder) -> Result<BatchNorm> {
    candle_nn::batch_norm(channels, candle_nn::BatchNormConfig::default(), vb)
}

/// Conv -> BN -> ReLU on `(F, C, R, R)`; the conv has no bias (BN would cancel it).
#[derive(Debug, Clone)]
struct ConvBnRelu {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBnRelu {
    fn new(in_c: usize, out_c: usize, k: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: candle_nn::conv2d_no_bias(
                in_c,
                out_c,
                k,
                Conv2dConfig {
                    padding: k / 2,
                    ..Default::default()
                },
                vb.pp("conv"),
            )?,
            bn: batch_norm(out_c, vb.pp("bn"))?,
        })
    }
}

impl ModuleT for ConvBnRelu {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(x)?, train)?.relu()
    }
}

/// phi_anom: the detector map at R x R, `(F, 1, R, R)` -> `(F, A, R, R)` (Conv3x3 -> BN -> ReLU).
#[derive(Debug, Clone)]
pub(super) struct AnomalyProjection {
    block: ConvBnRelu,
}

impl AnomalyProjection {
    pub(super) fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            block: ConvBnRelu::new(1, cfg.anomaly_channels, 3, vb)?,
        })
    }
}

impl ModuleT for AnomalyProjection {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.block.forward_t(x, train)
    }
}

/// Fusion: concat(F_dino, phi_anom) -> Conv -> BN -> ReLU -> Conv -> BN -> ReLU = F_fused.
#[derive(Debug, Clone)]
pub(super) struct Fusion {
    reduce: ConvBnRelu,
    out: ConvBnRelu,
}

impl Fusion {
    pub(super) fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let k = cfg.fusion_kernel;
        Ok(Self {
            reduce: ConvBnRelu::new(cfg.fusion_in(), cfg.fusion_hidden, k, vb.pp("reduce"))?,
            out: ConvBnRelu::new(cfg.fusion_hidden, cfg.fused_channels, k, vb.pp("out"))?,
        })
    }
}

impl ModuleT for Fusion {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.out.forward_t(&self.reduce.forward_t(x, train)?, train)
    }
}

/// Conv3d 3x3x3 (no bias) -> BN3d -> ReLU on `(N, C, T, R, R)`.
#[derive(Debug, Clone)]
struct Conv3dBlock {
    conv: Conv3d,
    bn: BatchNorm3d,
}

impl Conv3dBlock {
    fn new(in_c: usize, out_c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: conv3d_no_bias(in_c, out_c, Conv3dConfig::same(3), vb.pp("conv"))?,
            bn: batch_norm3d(out_c, vb.pp("bn"))?,
        })
    }
}

impl ModuleT for Conv3dBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(x)?, train)?.relu()
    }
}

/// What the temporal module returns for a batch of windows.
pub(super) struct TemporalOut {
    /// Delta at R x R, `(N, 1, R, R)` in [-1, 1].
    pub delta: Tensor,
    /// Frame attention `(N, WINDOW)`, rows summing to 1.
    pub attention: Tensor,
}

/// The temporal module (Sec. III-C): two Conv3d blocks with a channel bottleneck, content-driven
/// frame attention, a (w, 1, 1) aggregation and the spatial refiner with tanh.
#[derive(Debug, Clone)]
pub(super) struct TemporalModule {
    block1: Conv3dBlock,
    block2: Conv3dBlock,
    attention1: Linear,
    attention2: Linear,
    aggregate: Conv3d,
    refine1: Conv2d,
    refine2: Conv2d,
}

impl TemporalModule {
    pub(super) fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (c, h1, h2) = (cfg.fused_channels, cfg.temporal_hidden, cfg.temporal_out);
        let aggregate = Conv3dConfig {
            kernel: (WINDOW, 1, 1),
            padding: (0, 0, 0),
        };
        Ok(Self {
            block1: Conv3dBlock::new(c, h1, vb.pp("block1"))?,
            block2: Conv3dBlock::new(h1, h2, vb.pp("block2"))?,
            attention1: candle_nn::linear(h2, cfg.attention_hidden, vb.pp("attention1"))?,
            // no bias: a score offset shared by all frames cancels in the softmax
            attention2: candle_nn::linear_no_bias(cfg.attention_hidden, 1, vb.pp("attention2"))?,
            aggregate: conv3d(h2, h2, aggregate, vb.pp("aggregate"))?,
            refine1: conv2d(h2, cfg.refiner_hidden, 3, vb.pp("refine1"))?,
            refine2: conv2d(cfg.refiner_hidden, 1, 3, vb.pp("refine2"))?,
        })
    }

    /// `(N, C, WINDOW, R, R)` -> Delta and attention.
    pub(super) fn forward_t(&self, windows: &Tensor, train: bool) -> Result<TemporalOut> {
        let x = self.block1.forward_t(windows, train)?;
        let x = self.block2.forward_t(&x, train)?; // (N, h2, w, R, R)
        let (n, h2, w, _, _) = x.dims5()?;
        // adaptive average pool per frame -> Linear -> ReLU -> Linear -> softmax over frames
        // contiguous: candle's batched matmul misreads a transposed (N, w, h2) for N > 1
        let pooled = x.flatten_from(3)?.mean(3)?.transpose(1, 2)?.contiguous()?; // (N, w, h2)
        let scores = self
            .attention2
            .forward(&self.attention1.forward(&pooled)?.relu()?)?
            .squeeze(2)?; // (N, w)
        let attention = candle_nn::ops::softmax(&scores, 1)?;
        let x = x.broadcast_mul(&attention.reshape((n, 1, w, 1, 1))?)?;
        let x = self.aggregate.forward(&x)?.squeeze(2)?; // (N, h2, R, R)
        debug_assert_eq!(x.dim(1)?, h2);
        let delta = self
            .refine2
            .forward(&self.refine1.forward(&x)?.relu()?)?
            .tanh()?;
        Ok(TemporalOut { delta, attention })
    }
}

/// U = sigmoid(f_theta(F_dino)) (Sec. III-D): Conv3x3 -> ReLU -> Conv1x1 -> sigmoid at R x R.
#[derive(Debug, Clone)]
pub(super) struct ConfidenceEstimator {
    conv1: Conv2d,
    conv2: Conv2d,
}

impl ConfidenceEstimator {
    pub(super) fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: conv2d(
                cfg.feature_channels,
                cfg.confidence_hidden,
                3,
                vb.pp("conv1"),
            )?,
            conv2: conv2d(cfg.confidence_hidden, 1, 1, vb.pp("conv2"))?,
        })
    }
}

impl Module for ConfidenceEstimator {
    fn forward(&self, dino: &Tensor) -> Result<Tensor> {
        candle_nn::ops::sigmoid(&self.conv2.forward(&self.conv1.forward(dino)?.relu()?)?)
    }
}
