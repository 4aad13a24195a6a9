//! The frozen feature extractor the detector sits on, behind a small trait so training, the
//! feature cache and `stars detect` do not care which backbone (or which weights) it is.
use std::path::Path;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::model::dinov2::{self, preprocess, Padding, PosInterp};
use crate::model::weights::{load_dinov2, random_dinov2, LoadOptions, LoadedBackbone};

/// Label carried by every output made with a random backbone.
pub const RANDOM_BACKBONE_LABEL: &str = "PLACEHOLDER_RANDOM_BACKBONE";

/// Seed of the placeholder random backbone (fixed, so detect sees the weights training saw).
const RANDOM_SEED: u64 = 0;

/// A frame's backbone features and where the frame sits in the padded input.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// Patch features `(1, C, Hp, Wp)`, f32.
    pub features: Tensor,
    /// The frame inside the padded (multiple of 14) input.
    pub padding: Padding,
}

/// Frame -> patch features.
pub trait FeatureExtractor {
    /// Which backbone and which weights (keys the feature cache; printed in reports).
    fn describe(&self) -> String;
    /// Feature channels.
    fn channels(&self) -> usize;
    /// True for placeholder random weights.
    fn is_random(&self) -> bool;
    /// Embeds one RGB frame.
    fn embed(&self, image: &RgbImage) -> anyhow::Result<Embedded>;
}

/// DINOv2 as FlowCLAS uses it: ALLO normalisation, centred zero padding to a multiple of 14,
/// patch tokens after the last block without the final LayerNorm.
pub struct Dinov2Features {
    backbone: LoadedBackbone,
    device: Device,
}

impl FeatureExtractor for Dinov2Features {
    fn describe(&self) -> String {
        self.backbone.describe()
    }

    fn channels(&self) -> usize {
        self.backbone.model.config().hidden_size
    }

    fn is_random(&self) -> bool {
        self.backbone.source.is_random()
    }

    fn embed(&self, image: &RgbImage) -> anyhow::Result<Embedded> {
        let (x, padding) = preprocess(image, &self.device)?;
        let tokens = self.backbone.patch_tokens(&x, false)?; // (1, Hp, Wp, C)
        let features = tokens.permute((0, 3, 1, 2))?.contiguous()?;
        Ok(Embedded { features, padding })
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
/// when `random`, else an error telling the user which flag to pass.
pub fn open(
    arch: &str,
    weights: Option<&Path>,
    random: bool,
) -> anyhow::Result<Box<dyn FeatureExtractor>> {
    let device = Device::Cpu;
    let backbone = match (weights, random) {
        (Some(path), _) => load_dinov2(path, &device, &detector_load_options())
            .with_context(|| format!("--backbone-weights {}", path.display()))?,
        (None, true) => random_dinov2(&config_of(arch)?, RANDOM_SEED, &device)?,
        (None, false) => bail!(
            "no backbone weights: pass --backbone-weights PATH (see `stars models`), or \
             --random-weights for a placeholder run labelled as such"
        ),
    };
    Ok(Box::new(Dinov2Features { backbone, device }))
}
