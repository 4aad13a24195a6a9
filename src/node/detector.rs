//! # detector_node
//!
//! Runs the frozen single-frame detector (FlowCLAS: DINOv2 patch features of the whole frame,
//! zero-padded to a multiple of 14, then the normalizing flow) on each camera frame and
//! publishes its per-pixel anomaly map at the frame's size. It shares the backbone with the
//! feature node.
//!
//! **Subscribed topics**
//! - `/camera/image_raw` (`sensor_msgs/Image`: rgb8, bgr8, rgba8, bgra8, mono8): frames.
//!
//! **Published topics**
//! - `/stars/detector/anomaly_map` (`sensor_msgs/Image`, 32FC1, values in [0, 1], the frame's
//!   size): header copied from the frame.
//!
//! **Parameters**
//! - `queue_depth (int, default 1)`: frames waiting for this node; a full queue drops the
//!   oldest. 1..=100.
use std::sync::Arc;

use anyhow::Result;
use serde::Deserialize;

use super::config::check;
use super::maps::map_to_image;
use super::{camera_frame, topics, Msg, Node, Publication};
use crate::model::flowclas::backbone::FeatureExtractor;
use crate::model::flowclas::FlowClas;
use crate::temporal::AnomalyMap;

/// Parameters of the detector node (defaults in `Default`, mirrored in `config/stars.yaml`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[cfg_attr(feature = "ros2", derive(r2r::RosParams))]
#[serde(deny_unknown_fields, default)]
pub struct DetectorParams {
    /// Input queue depth.
    pub queue_depth: u32,
}

impl Default for DetectorParams {
    fn default() -> Self {
        Self { queue_depth: 1 }
    }
}

impl DetectorParams {
    /// Checks the ranges documented above.
    pub fn validate(&self) -> Result<()> {
        check(
            (1..=100).contains(&self.queue_depth),
            "detector_node.queue_depth",
            self.queue_depth,
            "1..=100",
        )
    }
}

/// The detector node's logic.
pub struct DetectorNode {
    model: FlowClas,
    extractor: Arc<dyn FeatureExtractor>,
    frames: u64,
}

impl DetectorNode {
    /// A node running `model` on `extractor`'s features (the backbone it was trained on).
    pub fn new(
        params: DetectorParams,
        model: FlowClas,
        extractor: Arc<dyn FeatureExtractor>,
    ) -> Result<Self> {
        params.validate()?;
        Ok(Self {
            model,
            extractor,
            frames: 0,
        })
    }
}

impl Node for DetectorNode {
    fn name(&self) -> &'static str {
        "detector_node"
    }

    fn subscriptions(&self) -> Vec<&'static str> {
        vec![topics::CAMERA]
    }

    fn publications(&self) -> Vec<&'static str> {
        vec![topics::DETECTOR_MAP]
    }

    fn handle(&mut self, topic: &str, msg: Arc<Msg>) -> Result<Vec<Publication>> {
        let (image, frame) = camera_frame(topic, &msg)?;
        let embedded = self.extractor.embed(&frame)?;
        let map = self
            .model
            .anomaly_map(&embedded.features, embedded.padding)?
            .squeeze(0)?;
        let (h, w) = map.dims2()?;
        let map = AnomalyMap::new(w, h, map.flatten_all()?.to_vec1::<f32>()?)?;
        self.frames += 1;
        Ok(vec![Publication::new(
            topics::DETECTOR_MAP,
            map_to_image(image.header.clone(), &map),
        )])
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![("frames", self.frames)]
    }
}
