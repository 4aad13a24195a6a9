//! DINOv2 weights: safetensors checkpoints in Hugging Face transformers naming (with
//! `config.json`) or torch-hub naming, renamed into the torch-hub names `model::dinov2` reads;
//! labelled random weights for runs without a checkpoint; the manifest of supported checkpoints
//! and the Hugging Face cache they are fetched into.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::dinov2::{Config, Dinov2, PosInterp, Rein};
use random::RandomBackend;

pub mod manifest;
mod random;

/// Tensor naming convention of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Hugging Face transformers (`embeddings.patch_embeddings.projection.weight`).
    Hf,
    /// torch-hub / facebookresearch/dinov2 (`patch_embed.proj.weight`).
    TorchHub,
}

impl std::fmt::Display for Naming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hf => "HF naming",
            Self::TorchHub => "torch-hub naming",
        })
    }
}

/// Where a backbone's weights came from; printed with every run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSource {
    /// A safetensors checkpoint.
    Checkpoint {
        /// The file read.
        path: PathBuf,
        /// Its naming convention.
        naming: Naming,
        /// The file's sha256 when known for free (a Hugging Face cache blob is named by it).
        sha256: Option<String>,
    },
    /// Deterministic random weights: a placeholder, not a trained backbone.
    Random {
        /// Seed of the generator.
        seed: u64,
    },
}

impl WeightsSource {
    /// True for placeholder random weights.
    pub fn is_random(&self) -> bool {
        matches!(self, Self::Random { .. })
    }

    /// One line saying where the weights came from, printed with every run.
    pub fn describe(&self) -> String {
        match self {
            Self::Checkpoint {
                path,
                naming,
                sha256,
            } => {
                let sha = sha256
                    .as_deref()
                    .map(|s| format!(", sha256 {s}"))
                    .unwrap_or_default();
                format!("DINOv2 from {} ({naming}{sha})", path.display())
            }
            Self::Random { seed } => {
                format!("RANDOM WEIGHTS (placeholder, seed {seed}) — not a trained backbone")
            }
        }
    }
}

/// A backbone and where its weights came from.
#[derive(Debug, Clone)]
pub struct LoadedBackbone {
    /// The model.
    pub model: Dinov2,
    /// Rein adapters between the blocks, when the weights file carries them.
    pub rein: Option<Rein>,
    /// Its weights' origin.
    pub source: WeightsSource,
}

impl LoadedBackbone {
    /// One line saying what was loaded: origin, architecture, position interpolation and
    /// adapters, e.g. "DINOv2 from x/model.safetensors (HF naming) — ViT-L/14, transformers
    /// position interpolation".
    pub fn describe(&self) -> String {
        let cfg = self.model.config();
        let rein = self
            .rein
            .as_ref()
            .map(|r| format!(", with {}", r.describe()))
            .unwrap_or_default();
        format!(
            "{} — {}, {} position interpolation{rein}",
            self.source.describe(),
            cfg.arch_name(),
            cfg.interpolation
        )
    }

    /// Patch tokens after the chosen blocks (see [`Dinov2::intermediate_layers`]), with the
    /// Rein adapters applied after every block when present.
    pub fn intermediate_layers(
        &self,
        x: &Tensor,
        layers: &[usize],
        final_norm: bool,
    ) -> candle_core::Result<Vec<Tensor>> {
        match &self.rein {
            Some(rein) => {
                self.model
                    .intermediate_layers_with(x, layers, final_norm, &mut |i, tokens| {
                        rein.refine(i, &tokens)
                    })
            }
            None => self.model.intermediate_layers(x, layers, final_norm),
        }
    }

    /// Patch tokens after the last block, (B, H/p, W/p, C): what FlowCLAS reads (without
    /// the final LayerNorm).
    pub fn patch_tokens(&self, x: &Tensor, final_norm: bool) -> candle_core::Result<Tensor> {
        self.tokens_after(x, self.model.config().num_layers, final_norm)
    }

    /// Patch tokens after the first `blocks` blocks, (B, H/p, W/p, C); `blocks` 0 is the
    /// patch embedding alone (no position embedding, no final LayerNorm).
    pub fn tokens_after(
        &self,
        x: &Tensor,
        blocks: usize,
        final_norm: bool,
    ) -> candle_core::Result<Tensor> {
        let Some(last) = blocks.checked_sub(1) else {
            return self.model.patch_embeddings(x);
        };
        let mut out = self.intermediate_layers(x, &[last], final_norm)?;
        out.pop()
            .ok_or_else(|| candle_core::Error::Msg("model has no blocks".into()))
    }
}

/// Choices when loading a checkpoint.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Position-table interpolation; `None` picks the checkpoint's reference behaviour.
    pub interpolation: Option<PosInterp>,
    /// Dtype of the weights and activations (f32 on CPU).
    pub dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            interpolation: None,
            dtype: DType::F32,
        }
    }
}

/// `config.json` of a transformers `Dinov2Model` / `Dinov2WithRegistersModel` (fields we use).
#[derive(Debug, serde::Deserialize)]
struct HfConfig {
    #[serde(default)]
    model_type: String,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default = "default_mlp_ratio")]
    mlp_ratio: f64,
    #[serde(default)]
    use_swiglu_ffn: bool,
    #[serde(default)]
    num_register_tokens: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_image_size")]
    image_size: usize,
    #[serde(default = "default_patch_size")]
    patch_size: usize,
    #[serde(default = "default_true")]
    qkv_bias: bool,
    #[serde(default = "default_act")]
    hidden_act: String,
}

fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_image_size() -> usize {
    518
}
fn default_patch_size() -> usize {
    14
}
fn default_true() -> bool {
    true
}
fn default_act() -> String {
    "gelu".into()
}

/// The reference's interpolation for a checkpoint: torch-hub models use the original offset
/// scale factor unless they have registers (hubconf `*_reg`: `size` + antialias); transformers'
/// `Dinov2Model` uses `size`, its `Dinov2WithRegistersModel` `size` + antialias.
fn default_interpolation(naming: Naming, registers: usize, model_type: &str) -> PosInterp {
    match naming {
        Naming::TorchHub if registers > 0 => PosInterp::Antialias,
        Naming::TorchHub => PosInterp::Original,
        Naming::Hf if model_type == "dinov2_with_registers" => PosInterp::Antialias,
        Naming::Hf => PosInterp::Transformers,
    }
}

impl HfConfig {
    fn to_config(&self, interpolation: PosInterp, layerscale: bool) -> anyhow::Result<Config> {
        if !self.qkv_bias {
            bail!("qkv_bias = false is not supported (every DINOv2 checkpoint has qkv biases)");
        }
        if !self.use_swiglu_ffn && self.hidden_act != "gelu" {
            bail!(
                "hidden_act {:?} is not supported (DINOv2 uses exact GELU)",
                self.hidden_act
            );
        }
        if self.patch_size == 0 || self.image_size % self.patch_size != 0 {
            bail!(
                "image_size {} is not a multiple of patch_size {}",
                self.image_size,
                self.patch_size
            );
        }
        Ok(Config {
            hidden_size: self.hidden_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            mlp_ratio: self.mlp_ratio,
            patch_size: self.patch_size,
            num_register_tokens: self.num_register_tokens,
            use_swiglu: self.use_swiglu_ffn,
            layer_norm_eps: self.layer_norm_eps,
            layerscale,
            pos_grid: self.image_size / self.patch_size,
            interpolation,
        })
    }
}

/// Loads a DINOv2 checkpoint: `path` is a `.safetensors` file or a directory holding
/// `model.safetensors` (and `config.json` for Hugging Face checkpoints).
pub fn load_dinov2(
    path: &Path,
    device: &Device,
    opts: &LoadOptions,
) -> anyhow::Result<LoadedBackbone> {
    let file = if path.is_dir() {
        path.join("model.safetensors")
    } else {
        path.to_path_buf()
    };
    if !file.is_file() {
        bail!(
            "no weights at {}: pass a .safetensors file or a folder with model.safetensors \
             (get one with `stars models fetch dinov2-large`, see models/README.md)",
            file.display()
        );
    }
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu)
        .with_context(|| format!("reading {}", file.display()))?;
    let rein_tensors = Rein::split_off(&mut tensors);
    let config_json = file.with_file_name("config.json");
    let hf_config = match config_json.is_file() {
        true => Some(read_hf_config(&config_json)?),
        false => None,
    };
    let (tensors, naming) =
        canonical_names(tensors).with_context(|| format!("reading {}", file.display()))?;
    let layerscale = tensors.contains_key("blocks.0.ls1.gamma");
    let cfg = match (&hf_config, naming) {
        (Some(hf), _) => {
            let interp = opts.interpolation.unwrap_or(default_interpolation(
                naming,
                hf.num_register_tokens,
                &hf.model_type,
            ));
            hf.to_config(interp, layerscale)
                .with_context(|| format!("in {}", config_json.display()))?
        }
        (None, Naming::Hf) => bail!(
            "{} is in Hugging Face naming but {} is missing (it holds the model's shape)",
            file.display(),
            config_json.display()
        ),
        (None, Naming::TorchHub) => infer_config(&tensors, opts.interpolation)
            .with_context(|| format!("reading {}", file.display()))?,
    };
    let vb = VarBuilder::from_tensors(tensors, opts.dtype, device);
    let model = Dinov2::new(&cfg, vb).with_context(|| {
        format!(
            "{} ({naming}) does not fit DINOv2 {} (tensor names are given in torch-hub naming)",
            file.display(),
            cfg.arch_name()
        )
    })?;
    let rein = Rein::load(
        rein_tensors,
        cfg.num_layers,
        cfg.hidden_size,
        opts.dtype,
        device,
    )
    .with_context(|| format!("reading the Rein adapters in {}", file.display()))?;
    Ok(LoadedBackbone {
        model,
        rein,
        source: WeightsSource::Checkpoint {
            sha256: blob_sha256(&file),
            path: file,
            naming,
        },
    })
}

fn read_hf_config(path: &Path) -> anyhow::Result<HfConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A Hugging Face cache stores each LFS file as `blobs/<sha256>`: report it when the
/// checkpoint resolves to such a blob, at no hashing cost.
fn blob_sha256(file: &Path) -> Option<String> {
    let real = std::fs::canonicalize(file).ok()?;
    let name = real.file_name()?.to_str()?;
    let in_blobs = real.parent()?.file_name()? == "blobs";
    (in_blobs && name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| name.to_string())
}

/// Architecture of a torch-hub checkpoint (no config file) from its tensor shapes; heads are
/// width / 64 as in every released DINOv2.
fn infer_config(
    tensors: &HashMap<String, Tensor>,
    interpolation: Option<PosInterp>,
) -> anyhow::Result<Config> {
    let dims = |name: &str| -> anyhow::Result<Vec<usize>> {
        Ok(tensors
            .get(name)
            .with_context(|| format!("checkpoint lacks {name}"))?
            .dims()
            .to_vec())
    };
    let proj = dims("patch_embed.proj.weight")?;
    let pos = dims("pos_embed")?;
    let (hidden, patch) = match proj[..] {
        [c, 3, p, q] if c > 0 && p > 0 && p == q => (c, p),
        _ => {
            bail!("patch_embed.proj.weight has shape {proj:?}, expected (C, 3, p, p) with C, p > 0")
        }
    };
    let pos_grid = (pos.get(1).copied().unwrap_or(0).saturating_sub(1) as f64).sqrt() as usize;
    if pos.len() != 3 || pos_grid == 0 || pos[1] != 1 + pos_grid * pos_grid || pos[2] != hidden {
        bail!("pos_embed has shape {pos:?}, expected (1, 1 + M*M, {hidden}) with M > 0");
    }
    let num_layers = (0..)
        .take_while(|i| tensors.contains_key(&format!("blocks.{i}.norm1.weight")))
        .count();
    if num_layers == 0 {
        bail!("checkpoint has no transformer blocks (blocks.0.norm1.weight is missing)");
    }
    let num_register_tokens = match tensors.get("register_tokens").map(|t| t.dims()) {
        Some(&[1, n, c]) if c == hidden => n,
        Some(other) => bail!("register_tokens has shape {other:?}, expected (1, n, {hidden})"),
        None => 0,
    };
    let use_swiglu = tensors.contains_key("blocks.0.mlp.w12.weight");
    let mlp_ratio = match use_swiglu {
        // the 2/3 rule is not invertible; every SwiGLU DINOv2 uses 4
        true => 4.0,
        false => match dims("blocks.0.mlp.fc1.weight")?[..] {
            [rows, cols] if rows > 0 && cols == hidden => rows as f64 / hidden as f64,
            ref other => bail!(
                "blocks.0.mlp.fc1.weight has shape {other:?}, expected (hidden, {hidden}) \
                 with hidden > 0"
            ),
        },
    };
    Ok(Config {
        hidden_size: hidden,
        num_layers,
        num_heads: (hidden / 64).max(1),
        mlp_ratio,
        patch_size: patch,
        num_register_tokens,
        use_swiglu,
        layer_norm_eps: 1e-6,
        layerscale: tensors.contains_key("blocks.0.ls1.gamma"),
        pos_grid,
        interpolation: interpolation.unwrap_or(default_interpolation(
            Naming::TorchHub,
            num_register_tokens,
            "",
        )),
    })
}

/// Renames a checkpoint into torch-hub names: Hugging Face q/k/v projections are concatenated
/// into `qkv`; chunked torch-hub blocks (`blocks.1.6.`) are flattened; heads, pooler and mask
/// token are dropped.
fn canonical_names(
    tensors: HashMap<String, Tensor>,
) -> anyhow::Result<(HashMap<String, Tensor>, Naming)> {
    let strip = |k: &str| k.strip_prefix("dinov2.").unwrap_or(k).to_string();
    let tensors: HashMap<String, Tensor> =
        tensors.into_iter().map(|(k, v)| (strip(&k), v)).collect();
    if tensors.contains_key("embeddings.patch_embeddings.projection.weight") {
        Ok((hf_to_hub(tensors)?, Naming::Hf))
    } else if tensors.contains_key("patch_embed.proj.weight") {
        Ok((flatten_block_chunks(tensors), Naming::TorchHub))
    } else {
        bail!(
            "not a DINOv2 checkpoint: it has neither embeddings.patch_embeddings.projection.weight \
             (Hugging Face naming) nor patch_embed.proj.weight (torch-hub naming)"
        )
    }
}

/// `blocks.<chunk>.<i>.rest` -> `blocks.<i>.rest` (dinov2's `block_chunks` keeps global indices).
fn flatten_block_chunks(tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    tensors
        .into_iter()
        .map(|(k, v)| {
            let parts: Vec<&str> = k.splitn(4, '.').collect();
            let chunked = parts.len() == 4
                && parts[0] == "blocks"
                && parts[1].parse::<usize>().is_ok()
                && parts[2].parse::<usize>().is_ok();
            match chunked {
                true => (format!("blocks.{}.{}", parts[2], parts[3]), v),
                false => (k, v),
            }
        })
        .collect()
}

/// Hugging Face -> torch-hub names. Accepts the names on the Hub (and written by
/// `save_pretrained`) and transformers 5's in-memory names (`q_proj`, `gate_proj`, ...).
fn hf_to_hub(tensors: HashMap<String, Tensor>) -> anyhow::Result<HashMap<String, Tensor>> {
    const TOP: [(&str, &str); 7] = [
        ("embeddings.cls_token", "cls_token"),
        ("embeddings.position_embeddings", "pos_embed"),
        ("embeddings.register_tokens", "register_tokens"),
        (
            "embeddings.patch_embeddings.projection.weight",
            "patch_embed.proj.weight",
        ),
        (
            "embeddings.patch_embeddings.projection.bias",
            "patch_embed.proj.bias",
        ),
        ("layernorm.weight", "norm.weight"),
        ("layernorm.bias", "norm.bias"),
    ];
    const BLOCK: [(&str, &str); 19] = [
        ("norm1.", "norm1."),
        ("attention.output.dense.", "attn.proj."),
        ("attention.o_proj.", "attn.proj."),
        ("layer_scale1.lambda1", "ls1.gamma"),
        ("norm2.", "norm2."),
        ("layer_scale2.lambda1", "ls2.gamma"),
        ("mlp.fc1.", "mlp.fc1."),
        ("mlp.fc2.", "mlp.fc2."),
        ("mlp.weights_in.", "mlp.w12."),
        ("mlp.weights_out.", "mlp.w3."),
        ("mlp.down_proj.", "mlp.w3."),
        // joined below
        ("attention.attention.query.", "attn.q."),
        ("attention.attention.key.", "attn.k."),
        ("attention.attention.value.", "attn.v."),
        ("attention.q_proj.", "attn.q."),
        ("attention.k_proj.", "attn.k."),
        ("attention.v_proj.", "attn.v."),
        ("mlp.gate_proj.", "mlp.gate."),
        ("mlp.up_proj.", "mlp.up."),
    ];
    let rename = |key: &str| -> Option<String> {
        if let Some((_, to)) = TOP.iter().find(|(from, _)| *from == key) {
            return Some(to.to_string());
        }
        let rest = key.strip_prefix("encoder.layer.")?;
        let (index, rest) = rest.split_once('.')?;
        let (from, to) = BLOCK.iter().find(|(from, _)| rest.starts_with(from))?;
        Some(format!("blocks.{index}.{to}{}", &rest[from.len()..]))
    };
    let mut out: HashMap<String, Tensor> = HashMap::new();
    for (key, t) in tensors {
        if let Some(key) = rename(&key) {
            out.insert(key, t);
        }
    }
    join(&mut out, "attn.qkv", &["attn.q", "attn.k", "attn.v"])?;
    join(&mut out, "mlp.w12", &["mlp.gate", "mlp.up"])?;
    Ok(out)
}

/// Concatenates per-block parts (`blocks.N.<part>.weight|bias`) along rows into
/// `blocks.N.<joined>.*`; a block with some parts but not all is an error.
fn join(tensors: &mut HashMap<String, Tensor>, joined: &str, parts: &[&str]) -> anyhow::Result<()> {
    let first = format!(".{}.", parts[0]);
    let prefixes: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.find(&first).map(|at| k[..at].to_string()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for block in prefixes {
        for kind in ["weight", "bias"] {
            let pieces = parts
                .iter()
                .map(|p| {
                    let name = format!("{block}.{p}.{kind}");
                    tensors
                        .remove(&name)
                        .with_context(|| format!("checkpoint lacks the {kind} of {p} in {block}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            tensors.insert(format!("{block}.{joined}.{kind}"), Tensor::cat(&pieces, 0)?);
        }
    }
    Ok(())
}

/// Blocks of the random placeholder whose tokens the detector and `stars features` read by
/// default: 0, the patch embedding alone. A random ViT's blocks wash out the local appearance a
/// density model needs; a random linear projection of each patch keeps it (measured in
/// docs/detector.md, "Placeholder backbone").
pub const PLACEHOLDER_BLOCKS: usize = 0;

/// A backbone with deterministic random weights; only for runs that ask for it explicitly
/// (`--random-weights`): its features mean nothing.
pub fn random_dinov2(cfg: &Config, seed: u64, device: &Device) -> anyhow::Result<LoadedBackbone> {
    let vb = VarBuilder::from_backend(
        Box::new(RandomBackend::new(seed)),
        DType::F32,
        device.clone(),
    );
    Ok(LoadedBackbone {
        rein: None,
        model: Dinov2::new(cfg, vb)?,
        source: WeightsSource::Random { seed },
    })
}
