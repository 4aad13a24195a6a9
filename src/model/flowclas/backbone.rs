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
