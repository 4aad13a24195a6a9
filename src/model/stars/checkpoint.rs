//! Refiner checkpoints: `refiner.safetensors` (weights and BatchNorm running stats) +
//! `refiner.json` (config, the frozen stages it was trained on, training progress).
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Device;
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use super::{Config, StarsRefiner};
use crate::model::checkpoint_files;

/// File name of the weights inside a checkpoint directory.
pub const REFINER_WEIGHTS: &str = "refiner.safetensors";
/// File name of the config and training state inside a checkpoint directory.
pub const REFINER_JSON: &str = "refiner.json";

/// Everything about a refiner checkpoint that is not a tensor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefinerMeta {
    /// Widths, resolution and variant.
    pub config: Config,
    /// DINOv2 architecture of the features (`vit_small`, `vit_large`, `tiny`).
    pub backbone_arch: String,
    /// The backbone weights the refiner was trained on (random ones say so).
    pub backbone_weights: String,
    /// True when those weights were the random placeholder (PLACEHOLDER_RANDOM_BACKBONE).
    #[serde(default)]
    pub random_backbone: bool,
    /// The detector checkpoint whose maps it refines.
    pub detector: String,
    /// Optimiser steps taken so far.
    pub step: usize,
    /// Epochs completed so far.
    pub epoch: usize,
    /// Training settings, per-epoch losses and validation AP, for resume and the record.
    pub training: serde_json::Value,
}

/// Writes `vars` and `meta` into `dir` (created if needed).
pub fn save(dir: &Path, vars: &VarMap, meta: &RefinerMeta) -> Result<()> {
    checkpoint_files::save(dir, REFINER_WEIGHTS, vars, REFINER_JSON, meta)
}

/// Reads only the JSON half of a checkpoint.
pub fn load_meta(dir: &Path) -> Result<RefinerMeta> {
    checkpoint_files::load_meta(dir, REFINER_JSON, "a refiner")
}

/// Loads a checkpoint; every tensor the config needs must be present with its exact shape, and
/// no other tensor may be there.
pub fn load(dir: &Path, device: &Device) -> Result<(StarsRefiner, VarMap, RefinerMeta)> {
    let meta = load_meta(dir)?;
    let path = dir.join(REFINER_WEIGHTS);
    let stored = checkpoint_files::read_tensors(&path, device)?;
    let (model, vars) = checkpoint_files::build(stored, &path, device, |vb| {
        StarsRefiner::new(&meta.config, vb)
    })
    .with_context(|| {
        format!(
            "building the refiner from {}",
            dir.join(REFINER_JSON).display()
        )
    })?;
    Ok((model, vars, meta))
}
