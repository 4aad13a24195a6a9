//! The frozen feature extractor the detector sits on, behind a small trait so training, the
//! feature cache and `stars detect` do not care which backbone (or which weights) it is.
use std::path::Path;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::model::dinov2::{self, preprocess, Padding, PosInterp};
use crate::model::weights::{
    load_dinov2, random_dinov2, LoadOptions, LoadedBackbone, PLACEHOLDER_BLOCKS,
};

/// Label carried by every output made with a random backbone.
pub const RANDOM_BACKBONE_LABEL: &str = "PLACEHOLDER_RANDOM_BACKBONE";

/// Seed of the placeholder random backbone (fixed, so detect sees the weights training saw).
const RANDOM_SEED: u64 = 0;

/// A frame's backbone features and where the frame sits in the padded input.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// Patch features `(1, C, Hp, Wp)`, f32.
    pub features: Tensor,
    /// The frame inside the padded (multiple of the patch size) input.
    pub padding: Padding,
}

/// Frame -> patch features. `Send + Sync` so one loaded backbone serves the feature and the
/// detector stages of the node graph at once.
pub trait FeatureExtractor: Send + Sync {
    /// Which backbone and which weights (keys the feature cache; printed in reports).
    fn describe(&self) -> String;
    /// Feature channels.
    fn channels(&self) -> usize;
    /// True for placeholder random weights.
    fn is_random(&self) -> bool;
    /// Embeds one RGB frame.
    fn embed(&self, image: &RgbImage) -> anyhow::Result<Embedded>;
    /// Backbone blocks run before the tokens are read (0: the patch embedding alone), for
    /// backbones made of blocks.
    fn blocks(&self) -> Option<usize> {
        None
    }
}

/// Side of the square the frame is resized to for STARS's feature input (spec: 224, a 16x16
/// patch grid spanning the whole frame).
pub const REFINER_INPUT_SIZE: u32 = 224;

/// The patch features `(1, C, gh, gw)` of `frame` resized to `side` x `side`: the grid spans
/// the whole frame (no padding), which is how the feature node feeds STARS.
pub fn resized_features(
    extractor: &dyn FeatureExtractor,
    frame: &RgbImage,
    side: u32,
) -> anyhow::Result<Tensor> {
    let resized = image::imageops::resize(frame, side, side, image::imageops::FilterType::Triangle);
    Ok(extractor.embed(&resized)?.features)
}

/// DINOv2 as FlowCLAS uses it: ALLO normalisation, centred zero padding to a multiple of the
/// patch size, patch tokens after `blocks` blocks (FlowCLAS: all of them) without the final
/// LayerNorm.
pub struct Dinov2Features {
    backbone: LoadedBackbone,
    blocks: usize,
    device: Device,
}

impl FeatureExtractor for Dinov2Features {
    fn describe(&self) -> String {
        let depth = self.backbone.model.config().num_layers;
        match self.blocks {
            b if b == depth => self.backbone.describe(),
            0 => format!("{}, patch embedding only", self.backbone.describe()),
            b => format!(
                "{}, tokens after block {b} of {depth}",
                self.backbone.describe()
            ),
        }
    }

    fn channels(&self) -> usize {
        self.backbone.model.config().hidden_size
    }

    fn is_random(&self) -> bool {
        self.backbone.source.is_random()
    }

    fn embed(&self, image: &RgbImage) -> anyhow::Result<Embedded> {
        let patch = self.backbone.model.config().patch_size;
        let (x, padding) = preprocess(image, patch, &self.device)?;
        let tokens = self.backbone.tokens_after(&x, self.blocks, false)?; // (1, Hp, Wp, C)
        let features = tokens.permute((0, 3, 1, 2))?.contiguous()?;
        Ok(Embedded { features, padding })
    }

    fn blocks(&self) -> Option<usize> {
        Some(self.blocks)
    }
}

/// The DINOv2 architecture a detector preset sits on.
pub fn arch_of_preset(preset: &str) -> &'static str {
    match preset {
        "paper" => "vit_large",
        "tiny" => "tiny",
        _ => "vit_small",
    }
}

/// The DINOv2 config of an architecture name stored in checkpoints.
fn config_of(arch: &str) -> anyhow::Result<dinov2::Config> {
    Ok(match arch {
        "vit_large" => dinov2::Config::vit_large(),
        "vit_small" => dinov2::Config::vit_small(),
        "tiny" => dinov2::Config::tiny(),
        other => bail!("unknown backbone architecture `{other}` (vit_large, vit_small, tiny)"),
    })
}

/// How the detector loads DINOv2 weights: FlowCLAS resizes the position table with the
/// original DINOv2 formula (offset scale factor) whatever the checkpoint's naming, so an
/// HF-named checkpoint must not get transformers' interpolation here.
pub fn detector_load_options() -> LoadOptions {
    LoadOptions {
        interpolation: Some(PosInterp::Original),
        ..LoadOptions::default()
    }
}

/// Opens the DINOv2 backbone: `weights` when given, else the random placeholder of `arch`
/// when `random`, else an error telling the user which flag to pass. The detector reads the
/// tokens after `blocks` blocks; `None` means FlowCLAS's last block for real weights and
/// [`PLACEHOLDER_BLOCKS`] for the random placeholder. The backbone runs on `device`.
pub fn open(
    arch: &str,
    weights: Option<&Path>,
    random: bool,
    blocks: Option<usize>,
    device: &Device,
) -> anyhow::Result<Box<dyn FeatureExtractor>> {
    let backbone = match (weights, random) {
        (Some(path), _) => load_dinov2(path, device, &detector_load_options())
            .with_context(|| format!("--backbone-weights {}", path.display()))?,
        (None, true) => random_dinov2(&config_of(arch)?, RANDOM_SEED, device)?,
        (None, false) => bail!(
            "no backbone weights: pass --backbone-weights PATH (see `stars models`), or \
             --random-weights for a placeholder run labelled as such"
        ),
    };
    let depth = backbone.model.config().num_layers;
    let blocks = match blocks {
        Some(b) if b > depth => {
            bail!("--backbone-blocks {b}: the backbone has {depth} blocks (0 to {depth})")
        }
        Some(b) => b,
        None if backbone.source.is_random() => PLACEHOLDER_BLOCKS,
        None => depth,
    };
    Ok(Box::new(Dinov2Features {
        backbone,
        blocks,
        device: device.clone(),
    }))
}
