//! # feature_node
//!
//! Embeds each camera frame with the frozen DINOv2 backbone at `input_size` x `input_size`
//! (the frame resized, 224 by default, giving a 16x16 patch grid) for the STARS refiner, and
//! publishes the patch tokens as one `32FC<C>` image of the grid. It shares the backbone (one
//! copy of the weights) with the detector node.
//!
//! **Subscribed topics**
//! - `/camera/image_raw` (`sensor_msgs/Image`: rgb8, bgr8, rgba8, bgra8, mono8): frames.
//!
//! **Published topics**
//! - `/stars/features` (`sensor_msgs/Image`, `32FC<C>`, grid `input_size / 14` squared): the
//!   frame's patch tokens, channels interleaved per patch, header copied from the frame.
//!
//! **Parameters**
//! - `input_size (int, default 224)`: side the frame is resized to before embedding. A multiple
//!   of 14 in 14..=1022.
//! - `queue_depth (int, default 1)`: frames waiting for this node; a full queue drops the
//!   oldest. 1..=100.
use std::sync::Arc;

use anyhow::Result;
use image::RgbImage;
use serde::Deserialize;

use super::config::check;
use super::maps::features_to_image;
use super::{camera_frame, topics, Msg, Node, Publication};
use crate::model::flowclas::backbone::{resized_features, FeatureExtractor, REFINER_INPUT_SIZE};
use crate::temporal::PatchFeatures;

/// Parameters of the feature node (defaults in `Default`, mirrored in `config/stars.yaml`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[cfg_attr(feature = "ros2", derive(r2r::RosParams))]
#[serde(deny_unknown_fields, default)]
pub struct FeatureParams {
    /// Side of the square backbone input, pixels.
    pub input_size: u32,
    /// Input queue depth.
    pub queue_depth: u32,
}

impl Default for FeatureParams {
    fn default() -> Self {
        Self {
            input_size: REFINER_INPUT_SIZE,
            queue_depth: 1,
        }
    }
}

impl FeatureParams {
    /// Checks the ranges documented above.
    pub fn validate(&self) -> Result<()> {
        let s = self.input_size;
        check(
            s % 14 == 0 && (14..=1022).contains(&s),
            "feature_node.input_size",
            s,
            "multiples of 14 in 14..=1022",
        )?;
        check(
            (1..=100).contains(&self.queue_depth),
            "feature_node.queue_depth",
            self.queue_depth,
            "1..=100",
        )
    }
}

/// The backbone's patch features of `frame` resized to `side` x `side`, channels first.
pub fn frame_features(
    extractor: &dyn FeatureExtractor,
    frame: &RgbImage,
    side: u32,
) -> Result<PatchFeatures> {
    let features = resized_features(extractor, frame, side)?;
    let (_, c, h, w) = features.dims4()?;
    let data = features.flatten_all()?.to_vec1::<f32>()?;
    PatchFeatures::new(c, h, w, data)
}

/// The feature node's logic.
pub struct FeatureNode {
    params: FeatureParams,
    extractor: Arc<dyn FeatureExtractor>,
    frames: u64,
}

impl FeatureNode {
    /// A node embedding with `extractor` (shared with the detector node).
    pub fn new(params: FeatureParams, extractor: Arc<dyn FeatureExtractor>) -> Result<Self> {
        params.validate()?;
        Ok(Self {
            params,
            extractor,
            frames: 0,
        })
    }
}

impl Node for FeatureNode {
    fn name(&self) -> &'static str {
        "feature_node"
    }

    fn subscriptions(&self) -> Vec<&'static str> {
        vec![topics::CAMERA]
    }

    fn publications(&self) -> Vec<&'static str> {
        vec![topics::FEATURES]
    }

    fn handle(&mut self, topic: &str, msg: Arc<Msg>) -> Result<Vec<Publication>> {
        let (image, frame) = camera_frame(topic, &msg)?;
        let features = frame_features(self.extractor.as_ref(), &frame, self.params.input_size)?;
        self.frames += 1;
        Ok(vec![Publication::new(
            topics::FEATURES,
            features_to_image(image.header.clone(), &features),
        )])
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![("frames", self.frames)]
    }
}
