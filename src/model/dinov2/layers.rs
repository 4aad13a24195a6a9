//! DINOv2's layers: patch embedding, chunked multi-head attention, LayerScale, GELU / SwiGLU
//! feed-forward, and the pre-norm block. Field and `vb` names are torch-hub checkpoint names.
use candle_core::{Module, Result, Tensor, D};
use candle_nn::{layer_norm, linear, Conv2d, Conv2dConfig, LayerNorm, Linear, VarBuilder};

use super::Config;

/// Non-overlapping patch projection: conv k = stride = patch.
#[derive(Debug, Clone)]
pub(super) struct PatchEmbed {
    proj: Conv2d,
}

impl PatchEmbed {
    pub(super) fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let conv_cfg = Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let proj = candle_nn::conv2d(3, cfg.hidden_size, cfg.patch_size, conv_cfg, vb.pp("proj"))?;
        Ok(Self { proj })
    }
}

impl Module for PatchEmbed {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // (B, 3, H, W) -> (B, C, Hp, Wp) -> (B, Hp*Wp, C)
        self.proj.forward(xs)?.flatten_from(2)?.transpose(1, 2)
    }
}

/// Score elements (batch x heads x query rows x keys) computed at once; bounds the attention
/// memory to 128 MiB in f32 whatever the token count.
const SCORE_BUDGET: usize = 1 << 25;

/// Multi-head self-attention with a fused qkv projection.
#[derive(Debug, Clone)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
    scale: f64,
    max_scores: usize,
}

impl Attention {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let c = cfg.hidden_size;
        Ok(Self {
            qkv: linear(c, 3 * c, vb.pp("qkv"))?,
            proj: linear(c, c, vb.pp("proj"))?,
            num_heads: cfg.num_heads,
            scale: 1.0 / ((c / cfg.num_heads) as f64).sqrt(),
            max_scores: SCORE_BUDGET,
        })
    }
}

impl Module for Attention {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, c) = xs.dims3()?;
        let h = self.num_heads;
        // (B, N, 3C) -> (3, B, h, N, d)
        let qkv = self
            .qkv
            .forward(xs)?
            .reshape((b, n, 3, h, c / h))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)? * self.scale)?.contiguous()?;
        let k_t = qkv.get(1)?.transpose(2, 3)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        // Softmax rows are independent, so query chunks give the exact result.
        let rows = (self.max_scores / (b * h * n)).clamp(1, n);
        let mut chunks = Vec::with_capacity(n.div_ceil(rows));
        for start in (0..n).step_by(rows) {
            let q = q.narrow(2, start, rows.min(n - start))?;
            let attn = candle_nn::ops::softmax_last_dim(&q.matmul(&k_t)?)?;
            chunks.push(attn.matmul(&v)?);
        }
        let out = Tensor::cat(&chunks, 2)?
            .transpose(1, 2)?
            .reshape((b, n, c))?;
        self.proj.forward(&out)
    }
}

/// Per-channel learned scale on a residual branch.
#[derive(Debug, Clone)]
struct LayerScale {
    gamma: Tensor,
}

impl LayerScale {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let gamma = vb.get_with_hints(cfg.hidden_size, "gamma", candle_nn::Init::Const(1.0))?;
        Ok(Self { gamma })
    }
}

impl Module for LayerScale {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.broadcast_mul(&self.gamma)
    }
}

/// Feed-forward: GELU MLP (`fc1`, `fc2`) or fused SwiGLU (`w12`, `w3`).
#[derive(Debug, Clone)]
enum Mlp {
    Gelu { fc1: Linear, fc2: Linear },
    SwiGlu { w12: Linear, w3: Linear },
}

impl Mlp {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (c, hidden) = (cfg.hidden_size, cfg.mlp_hidden());
        Ok(if cfg.use_swiglu {
            Self::SwiGlu {
                w12: linear(c, 2 * hidden, vb.pp("w12"))?,
                w3: linear(hidden, c, vb.pp("w3"))?,
            }
        } else {
            Self::Gelu {
                fc1: linear(c, hidden, vb.pp("fc1"))?,
                fc2: linear(hidden, c, vb.pp("fc2"))?,
            }
        })
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            // exact (erf) GELU, as nn.GELU()
            Self::Gelu { fc1, fc2 } => fc2.forward(&fc1.forward(xs)?.gelu_erf()?),
            Self::SwiGlu { w12, w3 } => {
                let x12 = w12.forward(xs)?;
                let half = x12.dim(D::Minus1)? / 2;
                let gate = candle_nn::ops::silu(&x12.narrow(D::Minus1, 0, half)?)?;
                w3.forward(&(gate * x12.narrow(D::Minus1, half, half)?)?)
            }
        }
    }
}

/// Pre-norm transformer block with LayerScale.
#[derive(Debug, Clone)]
pub(super) struct Block {
    norm1: LayerNorm,
    attn: Attention,
    ls1: Option<LayerScale>,
    norm2: LayerNorm,
    mlp: Mlp,
    ls2: Option<LayerScale>,
}

impl Block {
    pub(super) fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let c = cfg.hidden_size;
        let ls = |name: &str| match cfg.layerscale {
            true => LayerScale::new(cfg, vb.pp(name)).map(Some),
            false => Ok(None),
        };
        Ok(Self {
            norm1: layer_norm(c, cfg.layer_norm_eps, vb.pp("norm1"))?,
            attn: Attention::new(cfg, vb.pp("attn"))?,
            ls1: ls("ls1")?,
            norm2: layer_norm(c, cfg.layer_norm_eps, vb.pp("norm2"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            ls2: ls("ls2")?,
        })
    }
}

impl Module for Block {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let branch = self.attn.forward(&self.norm1.forward(xs)?)?;
        let xs = (xs
            + self
                .ls1
                .as_ref()
                .map_or(Ok(branch.clone()), |ls| ls.forward(&branch))?)?;
        let branch = self.mlp.forward(&self.norm2.forward(&xs)?)?;
        xs + self
            .ls2
            .as_ref()
            .map_or(Ok(branch.clone()), |ls| ls.forward(&branch))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn chunked_attention_equals_one_pass() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let cfg = Config::tiny();
        let mut attn = Attention::new(&cfg, vb).unwrap();
        let xs = Tensor::randn(0f32, 1.0, (2, 50, cfg.hidden_size), &Device::Cpu).unwrap();
        let whole = attn.forward(&xs).unwrap();
        // 2 batches x 4 heads x 7 rows x 50 keys: 8 chunks, the last one short
        attn.max_scores = 2 * 4 * 7 * 50;
        let chunked = attn.forward(&xs).unwrap();
        let diff = (whole - chunked).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    }
}
