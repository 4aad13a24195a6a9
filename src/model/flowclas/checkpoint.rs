//! Detector checkpoints: `detector.safetensors` (trainable weights) + `detector.json` (config,
//! permutations, ActNorm flag, backbone, training progress).
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use super::{Config, FlowClas, FlowState};
use crate::model::checkpoint_files;

/// File name of the trainable weights inside a checkpoint directory.
pub const DETECTOR_WEIGHTS: &str = "detector.safetensors";
/// File name of the config and state inside a checkpoint directory.
pub const DETECTOR_JSON: &str = "detector.json";

/// Everything about a checkpoint that is not a trainable tensor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Flow width and depth.
    pub config: Config,
    /// Permutations and the ActNorm flag.
    pub state: FlowState,
    /// DINOv2 architecture the features came from (`vit_small`, `vit_large`, `tiny`).
    pub backbone_arch: String,
    /// Human description of the backbone weights used for training (random ones say so).
    pub backbone_weights: String,
    /// Backbone blocks run before the features were read (0: the patch embedding alone);
    /// absent in checkpoints written before it was recorded, which read the last block.
    #[serde(default)]
    pub backbone_blocks: Option<usize>,
    /// Optimiser steps taken so far.
    pub step: usize,
    /// Epochs completed so far.
    pub epoch: usize,
    /// The training settings, for resume and for the record.
    pub training: serde_json::Value,
}

/// Writes `vars` and `meta` into `dir` (created if needed).
pub fn save(dir: &Path, vars: &VarMap, meta: &CheckpointMeta) -> Result<()> {
    checkpoint_files::save(dir, DETECTOR_WEIGHTS, vars, DETECTOR_JSON, meta)
}

/// Reads only the JSON half of a checkpoint.
pub fn load_meta(dir: &Path) -> Result<CheckpointMeta> {
    checkpoint_files::load_meta(dir, DETECTOR_JSON, "a detector")
}

/// Loads a checkpoint; every tensor the config needs must be present with its exact shape, and
/// no other tensor may be there.
pub fn load(dir: &Path, device: &Device) -> Result<(FlowClas, VarMap, CheckpointMeta)> {
    let meta = load_meta(dir)?;
    let path = dir.join(DETECTOR_WEIGHTS);
    let stored = checkpoint_files::read_tensors(&path, device)?;
    if let Some(rein) = stored.keys().find(|k| k.starts_with("rein")) {
        bail!(
            "{} carries Rein adapters (`{rein}`): they belong in the backbone weights file \
             (--backbone-weights), see docs/models.md#rein-adapters",
            path.display()
        );
    }
    let (model, vars) = checkpoint_files::build(stored, &path, device, |vb| {
        FlowClas::new(&meta.config, &meta.state, vb)
    })
    .with_context(|| {
        format!(
            "building the detector from {}",
            dir.join(DETECTOR_JSON).display()
        )
    })?;
    Ok((model, vars, meta))
}
