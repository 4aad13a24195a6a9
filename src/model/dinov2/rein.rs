//! Rein adapters, as the FlowCLAS ALLO model inserts them between DINOv2 blocks.
//!
//! Wei et al., "Stronger, Fewer, & Superior: Harnessing Vision Foundation Models for Domain
//! Generalized Semantic Segmentation" (CVPR 2024). After block i, every patch token f attends
//! over layer i's m learnable tokens T_i (LoRA form: T_i = A_i B_i, rank r):
//!
//! ```text
//! a     = softmax(f T_i^T / sqrt(C))                       over the m tokens
//! delta = W_delta (a[1:] W_t2f(T_i[1:]) + f) + b_delta     token 0 takes softmax mass only
//! f'    = f + scale * delta                                the class token passes unchanged
//! ```
//!
//! Tensor names are those of FlowCLAS's `LoRAReins` state dict, found in a DINOv2 weights file
//! under `reins.` or `backbone.reins.` (the mmseg checkpoint prefix FlowCLAS strips).
use std::collections::HashMap;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{ops::softmax_last_dim, Linear};

/// Prefixes under which a weights file carries Rein tensors.
const PREFIXES: [&str; 2] = ["backbone.reins.", "reins."];

/// Tensors of Rein's segmentation-query head: not used for features, known, skipped.
const QUERY_HEAD: [&str; 2] = ["transform.", "merge."];

/// Rein adapters for every block of a backbone.
#[derive(Debug, Clone)]
pub struct Rein {
    /// Per block: the m learnable tokens `(m, C)`, pre-scaled by 1/sqrt(C) for the logits.
    keys: Vec<Tensor>,
    /// Per block: `W_t2f(T_i[1:])`, `(m - 1, C)`; depends on weights only, so computed once.
    values: Vec<Tensor>,
    delta: Linear,
    scale: f64,
    /// Tokens per block and LoRA rank (None: full tokens), for `describe`.
    tokens: usize,
    rank: Option<usize>,
}

impl Rein {
    /// Moves the Rein tensors out of a weights file's tensor map, names stripped of their
    /// prefix (empty when the file has none).
    pub fn split_off(tensors: &mut HashMap<String, Tensor>) -> HashMap<String, Tensor> {
        let names: Vec<String> = tensors
            .keys()
            .filter(|k| PREFIXES.iter().any(|p| k.starts_with(p)))
            .cloned()
            .collect();
        names
            .into_iter()
            .filter_map(|name| {
                let short = PREFIXES.iter().find_map(|p| name.strip_prefix(p))?;
                Some((short.to_string(), tensors.remove(&name)?))
            })
            .collect()
    }

    /// The adapters of a `num_layers`-block, `width`-channel backbone from the tensors
    /// [`Rein::split_off`] returned; `None` when there are none.
    pub fn load(
        mut t: HashMap<String, Tensor>,
        num_layers: usize,
        width: usize,
        dtype: DType,
        device: &Device,
    ) -> anyhow::Result<Option<Self>> {
        if t.is_empty() {
            return Ok(None);
        }
        // token count and LoRA rank from the stored shapes; `take` checks them all below
        let lora = t.contains_key("learnable_tokens_a");
        let first = if lora {
            "learnable_tokens_a"
        } else {
            "learnable_tokens"
        };
        let dims = t
            .get(first)
            .with_context(|| format!("missing `{first}`"))?
            .dims()
            .to_vec();
        let (m, rank) = match (lora, &dims[..]) {
            (true, &[_, m, r]) => (m, Some(r)),
            (false, &[_, m, _]) => (m, None),
            _ => bail!("`{first}` is {dims:?}, expected (layers, tokens, rank or width)"),
        };
        let mut take = |name: &str, shape: &[usize]| -> anyhow::Result<Tensor> {
            let v = t
                .remove(name)
                .with_context(|| format!("missing `{name}`"))?;
            if v.dims() != shape {
                bail!("`{name}` is {:?}, expected {shape:?}", v.dims());
            }
            Ok(v.to_dtype(DType::F32)?.to_device(device)?)
        };
        let all_tokens = match rank {
            Some(r) => take("learnable_tokens_a", &[num_layers, m, r])?
                .matmul(&take("learnable_tokens_b", &[num_layers, r, width])?)?,
            None => take("learnable_tokens", &[num_layers, m, width])?,
        };
        if m < 2 {
            bail!("{m} learnable tokens per layer; Rein needs at least 2");
        }
        let scale = take("scale", &[])?.to_scalar::<f32>()? as f64;
        let mut linear = |name: &str| -> anyhow::Result<Linear> {
            let w = take(&format!("{name}.weight"), &[width, width])?;
            let b = take(&format!("{name}.bias"), &[width])?;
            Ok(Linear::new(w, Some(b)))
        };
        let token_to_feat = linear("mlp_token2feat")?;
        let delta = linear("mlp_delta_f")?;
        t.retain(|k, _| !QUERY_HEAD.iter().any(|q| k.starts_with(q)));
        if let Some(extra) = t.keys().next() {
            bail!("unexpected tensor `{extra}`");
        }
        let inv_sqrt_width = 1.0 / (width as f64).sqrt();
        let mut keys = Vec::with_capacity(num_layers);
        let mut values = Vec::with_capacity(num_layers);
        for layer in 0..num_layers {
            let tokens = all_tokens.get(layer)?; // (m, C)
            values.push(
                token_to_feat
                    .forward(&tokens.narrow(0, 1, m - 1)?)?
                    .to_dtype(dtype)?,
            );
            keys.push((tokens * inv_sqrt_width)?.to_dtype(dtype)?);
        }
        let delta = Linear::new(
            delta.weight().to_dtype(dtype)?,
            delta.bias().map(|b| b.to_dtype(dtype)).transpose()?,
        );
        Ok(Some(Self {
            keys,
            values,
            delta,
            scale,
            tokens: m,
            rank,
        }))
    }

    /// E.g. "Rein adapters (24 blocks x 100 tokens, rank 16, scale 0.031)".
    pub fn describe(&self) -> String {
        let rank = self.rank.map(|r| format!(", rank {r}")).unwrap_or_default();
        format!(
            "Rein adapters ({} blocks x {} tokens{rank}, scale {:.3})",
            self.keys.len(),
            self.tokens,
            self.scale
        )
    }

    /// Refines the token sequence `(B, 1 + N, C)` after block `layer`; the first (class)
    /// token passes unchanged, as in FlowCLAS.
    pub fn refine(&self, layer: usize, tokens: &Tensor) -> Result<Tensor> {
        let (Some(keys), Some(values)) = (self.keys.get(layer), self.values.get(layer)) else {
            candle_core::bail!("Rein has no adapter for block {layer}")
        };
        let n = tokens.dim(1)?;
        let cls = tokens.narrow(1, 0, 1)?;
        let f = tokens.narrow(1, 1, n - 1)?;
        let attn = softmax_last_dim(&f.broadcast_matmul(&keys.t()?)?)?; // (B, N, m)
        let m = attn.dim(2)?;
        let mixed = attn.narrow(2, 1, m - 1)?.broadcast_matmul(values)?; // (B, N, C)
        let delta = self.delta.forward(&(mixed + &f)?)?;
        let f = (f + (delta * self.scale)?)?;
        Tensor::cat(&[&cls, &f], 1)
    }
}
