//! What the graph's stages load, and the four nodes built from it: shared by `stars run`,
//! `stars bench` and the r2r executables, so every way of running the graph loads models the
//! same way and fails on the same mistakes before any frame flows.
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use candle_core::Device;

use super::alert::AlertNode;
use super::config::GraphConfig;
use super::detector::DetectorNode;
use super::feature::FeatureNode;
use super::temporal::{PassThrough, TemporalNode};
use super::Node;
use crate::model::flowclas::backbone::{self, FeatureExtractor};
use crate::model::flowclas::{self, CheckpointMeta, FlowClas};
use crate::temporal::open::open;
use crate::temporal::TemporalMethod;

/// Where the models come from and where they run.
#[derive(Clone, Debug)]
pub struct ModelSources {
    /// DINOv2 weights matching the detector's backbone.
    pub backbone_weights: Option<PathBuf>,
    /// Use the random placeholder backbone (outputs are labelled as such).
    pub random_weights: bool,
    /// Detector checkpoint directory (its metadata also names the backbone architecture).
    pub detector: PathBuf,
    /// Refiner checkpoint directory; selects the STARS method.
    pub refiner: Option<PathBuf>,
    /// Temporal method name (default: `stars` with a refiner, else `passthrough`).
    pub method: Option<String>,
    /// Where inference runs.
    pub device: Device,
}

/// The temporal node's method, with what to say about it.
pub struct LoadedMethod {
    /// The method.
    pub method: Box<dyn TemporalMethod>,
    /// Name and source, for logs and bag metadata.
    pub label: String,
    /// True when a refiner trained on the placeholder backbone is in it.
    pub random: bool,
}

impl ModelSources {
    /// The detector checkpoint's metadata (no weights read).
    pub fn detector_meta(&self) -> Result<CheckpointMeta> {
        flowclas::load_meta(&self.detector).with_context(|| self.detector_context())
    }

    /// The detector, loaded onto the device.
    pub fn load_detector(&self) -> Result<(FlowClas, CheckpointMeta)> {
        let (detector, _vars, meta) = flowclas::load(&self.detector, &self.device)
            .with_context(|| self.detector_context())?;
        Ok((detector, meta))
    }

    /// The backbone the detector of `meta` was trained on (one copy, shared by the feature
    /// and detector nodes of a process).
    pub fn open_backbone(&self, meta: &CheckpointMeta) -> Result<Arc<dyn FeatureExtractor>> {
        Ok(Arc::from(backbone::open(
            &meta.backbone_arch,
            self.backbone_weights.as_deref(),
            self.random_weights,
            meta.backbone_blocks,
            &self.device,
        )?))
    }

    /// The temporal method: `method`, or STARS when a refiner is given, else the detector
    /// maps passed through.
    pub fn open_method(&self) -> Result<LoadedMethod> {
        let refiner = self.refiner.as_deref();
        let name = self.method.as_deref().unwrap_or(if refiner.is_some() {
            "stars"
        } else {
            "passthrough"
        });
        if name == "passthrough" {
            ensure!(
                refiner.is_none(),
                "a refiner checkpoint is only for method stars, not passthrough"
            );
            return Ok(LoadedMethod {
                method: Box::new(PassThrough),
                label: PassThrough::LABEL.to_string(),
                random: false,
            });
        }
        let opened = open(name, None, refiner, &self.device)?;
        let label = match refiner {
            Some(dir) => format!("{name} ({})", dir.display()),
            None => format!("{name} {}", opened.params),
        };
        Ok(LoadedMethod {
            method: opened.method,
            label,
            random: opened.random_backbone,
        })
    }

    fn detector_context(&self) -> String {
        format!("detector {}", self.detector.display())
    }
}

/// The graph's stages, loaded and checked, before any frame flows.
pub struct Stages {
    /// Node parameters.
    pub cfg: GraphConfig,
    /// The detector.
    pub detector: FlowClas,
    /// The backbone, shared by the feature and detector nodes.
    pub extractor: Arc<dyn FeatureExtractor>,
    /// The temporal method.
    pub method: LoadedMethod,
    /// The alert node (threshold read).
    pub alert: AlertNode,
    /// True when anything in the graph runs on placeholder weights.
    pub random: bool,
}

impl Stages {
    /// Loads every model of `sources` on top of checked parameters and alert node.
    pub fn load(cfg: GraphConfig, alert: AlertNode, sources: &ModelSources) -> Result<Self> {
        let method = sources.open_method()?;
        let (detector, meta) = sources.load_detector()?;
        let extractor = sources.open_backbone(&meta)?;
        Ok(Self {
            random: extractor.is_random() || method.random,
            cfg,
            detector,
            extractor,
            method,
            alert,
        })
    }

    /// The four nodes with their queue depths, in graph order (feature, detector, temporal,
    /// alert).
    pub fn into_nodes(self) -> Result<Vec<(Box<dyn Node>, usize)>> {
        let cfg = self.cfg;
        let depth = |d: u32| d as usize;
        Ok(vec![
            (
                Box::new(FeatureNode::new(
                    cfg.feature_node.params.clone(),
                    self.extractor.clone(),
                )?),
                depth(cfg.feature_node.params.queue_depth),
            ),
            (
                Box::new(DetectorNode::new(
                    cfg.detector_node.params.clone(),
                    self.detector,
                    self.extractor,
                )?),
                depth(cfg.detector_node.params.queue_depth),
            ),
            (
                Box::new(TemporalNode::new(
                    cfg.temporal_node.params.clone(),
                    self.method.method,
                )?),
                depth(cfg.temporal_node.params.queue_depth),
            ),
            (
                Box::new(self.alert),
                depth(cfg.alert_node.params.queue_depth),
            ),
        ])
    }
}
