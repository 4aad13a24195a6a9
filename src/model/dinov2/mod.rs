//! DINOv2 vision transformer (ViT-S/B/L/g, patch 14, optional register tokens), the frozen
//! backbone of FlowCLAS.
//!
//! Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision" (2023);
//! registers: Darcet et al., "Vision Transformers Need Registers" (2024).
//!
//! Field and `vb` paths follow the torch-hub checkpoint names (`blocks.0.attn.qkv.weight`);
//! `model::weights` renames Hugging Face checkpoints into them. Inputs of any size that is a
//! multiple of 14 are accepted: the position table is resized bicubically the way the chosen
//! reference does ([`PosInterp`]), and attention runs over query chunks so memory stays linear
//! in the token count (1920x1080 is about 10.7k tokens).
//!
//! ```text
//! stars features --weights dinov2-large/ --image frame.png --out tokens.npy
//! ```
use candle_core::{bail, DType, Module, Result, Tensor};
use candle_nn::{layer_norm, LayerNorm, VarBuilder};

mod interp;
mod layers;
mod preprocess;
mod rein;

use layers::{Block, PatchEmbed};

pub use interp::{resize_matrix, resize_table, PosInterp};
pub use preprocess::{preprocess, Padding, ALLO_MEAN, ALLO_STD};
pub use rein::Rein;

/// Architecture of a DINOv2 backbone.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Token width C.
    pub hidden_size: usize,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// Attention heads per block (DINOv2 uses 64 channels per head).
    pub num_heads: usize,
    /// MLP width over token width (SwiGLU applies the 2/3 rule on top, see [`Config::mlp_hidden`]).
    pub mlp_ratio: f64,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Register tokens inserted after the class token (0 or 4 in the released models).
    pub num_register_tokens: usize,
    /// SwiGLU feed-forward (ViT-g) instead of the GELU MLP.
    pub use_swiglu: bool,
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f64,
    /// Per-channel LayerScale after attention and MLP.
    pub layerscale: bool,
    /// Side of the square position table (37 for 518-pixel training).
    pub pos_grid: usize,
    /// How the position table is resized to other grids.
    pub interpolation: PosInterp,
}

impl Config {
    fn vit(hidden_size: usize, num_layers: usize, num_heads: usize) -> Self {
        Self {
            hidden_size,
            num_layers,
            num_heads,
            mlp_ratio: 4.0,
            patch_size: 14,
            num_register_tokens: 0,
            use_swiglu: false,
            layer_norm_eps: 1e-6,
            layerscale: true,
            pos_grid: 37,
            interpolation: PosInterp::Original,
        }
    }

    /// ViT-S/14: 384 wide, 12 blocks, 6 heads.
    pub fn vit_small() -> Self {
        Self::vit(384, 12, 6)
    }

    /// ViT-B/14: 768 wide, 12 blocks, 12 heads.
    pub fn vit_base() -> Self {
        Self::vit(768, 12, 12)
    }

    /// ViT-L/14: 1024 wide, 24 blocks, 16 heads (the FlowCLAS backbone).
    pub fn vit_large() -> Self {
        Self::vit(1024, 24, 16)
    }

    /// ViT-g/14: 1536 wide, 40 blocks, 24 heads, SwiGLU feed-forward.
    pub fn vit_giant() -> Self {
        Self {
            use_swiglu: true,
            ..Self::vit(1536, 40, 24)
        }
    }

    /// A small random-weight configuration for tests: 32 wide, 2 blocks, 4 heads, 5x5 table.
    pub fn tiny() -> Self {
        Self {
            pos_grid: 5,
            ..Self::vit(32, 2, 4)
        }
    }

    /// The same architecture with `n` register tokens.
    pub fn with_registers(self, n: usize) -> Self {
        Self {
            num_register_tokens: n,
            ..self
        }
    }

    /// Hidden width of the feed-forward layer; SwiGLU keeps 2/3 of it rounded up to a multiple
    /// of 8 (dinov2 `SwiGLUFFNFused`: 4096 for ViT-g).
    pub fn mlp_hidden(&self) -> usize {
        let hidden = (self.hidden_size as f64 * self.mlp_ratio) as usize;
        if self.use_swiglu {
            ((hidden as f64 * 2.0 / 3.0) as usize).div_ceil(8) * 8
        } else {
            hidden
        }
    }

    /// A short name such as "ViT-L/14" or "ViT-S/14 + 4 registers".
    pub fn arch_name(&self) -> String {
        let size = match (self.hidden_size, self.num_layers) {
            (384, 12) => "S".to_string(),
            (768, 12) => "B".to_string(),
            (1024, 24) => "L".to_string(),
            (1536, 40) => "g".to_string(),
            (c, l) => format!("{c}x{l}"),
        };
        let registers = match self.num_register_tokens {
            0 => String::new(),
            n => format!(" + {n} registers"),
        };
        format!("ViT-{size}/{}{registers}", self.patch_size)
    }
}

/// The DINOv2 backbone.
#[derive(Debug, Clone)]
pub struct Dinov2 {
    patch_embed: PatchEmbed,
    cls_token: Tensor,
    pos_embed: Tensor,
    register_tokens: Option<Tensor>,
    blocks: Vec<Block>,
    norm: LayerNorm,
    cfg: Config,
}

impl Dinov2 {
    /// Builds the model from `vb` in torch-hub naming.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        if cfg.patch_size == 0 {
            bail!("patch size 0: patches are at least 1 pixel wide");
        }
        if cfg.num_heads == 0 || cfg.hidden_size % cfg.num_heads != 0 {
            bail!(
                "hidden size {} is not divisible into {} heads",
                cfg.hidden_size,
                cfg.num_heads
            );
        }
        let c = cfg.hidden_size;
        let init = candle_nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        // A config file may declare any grid; its table size must not overflow.
        let Some(table) = cfg
            .pos_grid
            .checked_mul(cfg.pos_grid)
            .filter(|t| *t < usize::MAX)
        else {
            bail!("position grid {0}x{0} is too large", cfg.pos_grid);
        };
        let register_tokens = match cfg.num_register_tokens {
            0 => None,
            n => Some(vb.get_with_hints((1, n, c), "register_tokens", init)?),
        };
        let vb_b = vb.pp("blocks");
        Ok(Self {
            patch_embed: PatchEmbed::new(cfg, vb.pp("patch_embed"))?,
            cls_token: vb.get_with_hints((1, 1, c), "cls_token", init)?,
            pos_embed: vb.get_with_hints((1, 1 + table, c), "pos_embed", init)?,
            register_tokens,
            blocks: (0..cfg.num_layers)
                .map(|i| Block::new(cfg, vb_b.pp(i)))
                .collect::<Result<_>>()?,
            norm: layer_norm(c, cfg.layer_norm_eps, vb.pp("norm"))?,
            cfg: cfg.clone(),
        })
    }

    /// The architecture this model was built with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Position embeddings for a `grid_h` x `grid_w` patch grid: (1, 1 + grid_h*grid_w, C).
    fn position_embeddings(&self, grid_h: usize, grid_w: usize) -> Result<Tensor> {
        let (m, c) = (self.cfg.pos_grid, self.cfg.hidden_size);
        let cls = self.pos_embed.narrow(1, 0, 1)?;
        // resized in f32 like every reference, whatever the model dtype
        let table = self.pos_embed.narrow(1, 1, m * m)?.reshape((m, m, c))?;
        let patches = resize_table(
            &table.to_dtype(DType::F32)?,
            grid_h,
            grid_w,
            self.cfg.interpolation,
        )?
        .to_dtype(self.pos_embed.dtype())?
        .reshape((1, grid_h * grid_w, c))?;
        Tensor::cat(&[cls, patches], 1)
    }

    /// Checks a (B, 3, H, W) input and returns its batch size and patch grid.
    fn grid_of(&self, x: &Tensor) -> Result<(usize, usize, usize)> {
        let (b, channels, h, w) = x.dims4()?;
        let p = self.cfg.patch_size;
        if channels != 3 {
            bail!("input has {channels} channels, expected 3 (RGB)");
        }
        if b == 0 {
            bail!("input batch is empty");
        }
        if p == 0 || h == 0 || w == 0 || h % p != 0 || w % p != 0 {
            bail!("input is {h}x{w}, expected a non-empty multiple of the patch size {p}");
        }
        Ok((b, h / p, w / p))
    }

    /// The patch embedding alone, (B, H/p, W/p, C): one linear projection per patch, without
    /// the class token, the position embedding or any block.
    pub fn patch_embeddings(&self, x: &Tensor) -> Result<Tensor> {
        let (b, grid_h, grid_w) = self.grid_of(x)?;
        self.patch_embed
            .forward(&x.to_dtype(self.pos_embed.dtype())?)?
            .reshape((b, grid_h, grid_w, self.cfg.hidden_size))
    }

    /// Tokens entering the first block: [cls, registers, patches], and the patch grid.
    fn embed(&self, x: &Tensor) -> Result<(Tensor, usize, usize)> {
        let (b, grid_h, grid_w) = self.grid_of(x)?;
        let c = self.cfg.hidden_size;
        let patches = self
            .patch_embed
            .forward(&x.to_dtype(self.pos_embed.dtype())?)?;
        let cls = self.cls_token.expand((b, 1, c))?;
        let tokens = Tensor::cat(&[&cls, &patches], 1)?
            .broadcast_add(&self.position_embeddings(grid_h, grid_w)?)?;
        let tokens = match &self.register_tokens {
            // registers get no position embedding: inserted after it is added
            Some(reg) => {
                let reg = reg.expand((b, reg.dim(1)?, c))?;
                let patches = tokens.narrow(1, 1, grid_h * grid_w)?;
                Tensor::cat(&[&tokens.narrow(1, 0, 1)?, &reg, &patches], 1)?
            }
            None => tokens,
        };
        Ok((tokens, grid_h, grid_w))
    }

    /// Drops class and register tokens, optionally applies the final LayerNorm, and lays the
    /// patch tokens out as (B, Hp, Wp, C).
    fn patch_grid(
        &self,
        tokens: &Tensor,
        grid: (usize, usize),
        final_norm: bool,
    ) -> Result<Tensor> {
        let (b, n, c) = tokens.dims3()?;
        let prefix = 1 + self.cfg.num_register_tokens;
        let patches = tokens.narrow(1, prefix, n - prefix)?;
        let patches = match final_norm {
            true => self.norm.forward(&patches)?,
            false => patches,
        };
        patches.reshape((b, grid.0, grid.1, c))
    }

    /// Patch tokens after each of the chosen blocks (0-based), each (B, H/14, W/14, C), in the
    /// order asked, for a normalised (B, 3, H, W) input whose sides are multiples of 14 (cast
    /// to the weights' dtype); `final_norm` applies the model's last LayerNorm to each.
    pub fn intermediate_layers(
        &self,
        x: &Tensor,
        layers: &[usize],
        final_norm: bool,
    ) -> Result<Vec<Tensor>> {
        self.intermediate_layers_with(x, layers, final_norm, &mut |_, tokens| Ok(tokens))
    }

    /// [`Self::intermediate_layers`] with `after_block(i, tokens)` applied to the whole token
    /// sequence (B, 1 + registers + Hp*Wp, C) after block i, before the next block sees it:
    /// the hook for adapters such as Rein that refine the tokens between blocks.
    pub fn intermediate_layers_with(
        &self,
        x: &Tensor,
        layers: &[usize],
        final_norm: bool,
        after_block: &mut dyn FnMut(usize, Tensor) -> Result<Tensor>,
    ) -> Result<Vec<Tensor>> {
        if let Some(&bad) = layers.iter().find(|&&l| l >= self.blocks.len()) {
            bail!(
                "layer {bad} does not exist: the model has {} blocks",
                self.blocks.len()
            );
        }
        let Some(&deepest) = layers.iter().max() else {
            return Ok(Vec::new());
        };
        let (mut tokens, grid_h, grid_w) = self.embed(x)?;
        let mut after = Vec::with_capacity(deepest + 1);
        for (i, block) in self.blocks.iter().enumerate().take(deepest + 1) {
            tokens = after_block(i, block.forward(&tokens)?)?;
            after.push(match layers.contains(&i) {
                true => Some(self.patch_grid(&tokens, (grid_h, grid_w), final_norm)?),
                false => None,
            });
        }
        // every asked layer is <= deepest, so it was computed above
        Ok(layers.iter().filter_map(|&l| after[l].clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swiglu_hidden_width_follows_dinov2() {
        assert_eq!(Config::vit_giant().mlp_hidden(), 4096);
        assert_eq!(Config::vit_large().mlp_hidden(), 4096);
        assert_eq!(Config::tiny().mlp_hidden(), 128);
    }
}
