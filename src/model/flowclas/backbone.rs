//! The frozen feature extractor the detector sits on, behind a small trait so training, the
//! feature cache and `stars detect` do not care which backbone (or which weights) it is.
use image::RgbImage;

use candle_core::Tensor;

use super::Crop;

/// A frame's backbone features and where the frame sits in the padded input.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// Patch features `(1, C, Hp, Wp)`, f32.
    pub features: Tensor,
    /// Size of the padded network input `(height, width)`.
    pub padded: (usize, usize),
    /// The frame inside the padded input.
    pub crop: Crop,
}

/// Frame -> patch features.
pub trait FeatureExtractor {
    /// Which backbone and which weights (keys the feature cache; printed in reports).
    fn describe(&self) -> String;
    /// Feature channels.
    fn channels(&self) -> usize;
    /// Embeds one RGB frame.
    fn embed(&self, image: &RgbImage) -> anyhow::Result<Embedded>;
}

/// The DINOv2 architecture a detector preset sits on.
pub fn arch_of_preset(preset: &str) -> &'static str {
    match preset {
        "paper" => "vit_large",
        "tiny" => "tiny",
        _ => "vit_small",
    }
}

/// Opens the DINOv2 backbone `arch` from `weights`, or with random weights when `random`.
pub fn open(
    arch: &str,
    weights: Option<&std::path::Path>,
    random: bool,
) -> anyhow::Result<Box<dyn FeatureExtractor>> {
    let _ = (arch, weights, random);
    anyhow::bail!("the DINOv2 backbone is not available in this build yet")
}
