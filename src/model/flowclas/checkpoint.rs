//! Detector checkpoints: `detector.safetensors` (trainable weights) + `detector.json` (config,
//! permutations, ActNorm flag, backbone, training progress).
use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::{Config, FlowClas, FlowState};

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
    /// Optimiser steps taken so far.
    pub step: usize,
    /// Epochs completed so far.
    pub epoch: usize,
    /// The training settings, for resume and for the record.
    pub training: serde_json::Value,
}

/// Writes `vars` and `meta` into `dir` (created if needed).
pub fn save(dir: &Path, vars: &VarMap, meta: &CheckpointMeta) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let weights = dir.join(DETECTOR_WEIGHTS);
    vars.save(&weights)
        .with_context(|| format!("writing {}", weights.display()))?;
    let json = dir.join(DETECTOR_JSON);
    std::fs::write(&json, serde_json::to_string_pretty(meta)?)
        .with_context(|| format!("writing {}", json.display()))
}

/// Reads only the JSON half of a checkpoint.
pub fn load_meta(dir: &Path) -> Result<CheckpointMeta> {
    let json = dir.join(DETECTOR_JSON);
    let text = std::fs::read_to_string(&json).with_context(|| {
        format!(
            "reading {} (is {} a detector checkpoint?)",
            json.display(),
            dir.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", json.display()))
}

/// Loads a checkpoint; every tensor the config needs must be present with its exact shape.
pub fn load(dir: &Path, device: &Device) -> Result<(FlowClas, VarMap, CheckpointMeta)> {
    let meta = load_meta(dir)?;
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, device);
    let model = FlowClas::new(&meta.config, &meta.state, vb).with_context(|| {
        format!(
            "building the detector from {}",
            dir.join(DETECTOR_JSON).display()
        )
    })?;
    let path = dir.join(DETECTOR_WEIGHTS);
    let stored: HashMap<String, Tensor> = candle_core::safetensors::load(&path, device)
        .with_context(|| format!("reading {}", path.display()))?;
    if let Some(rein) = stored.keys().find(|k| k.starts_with("rein")) {
        bail!(
            "{} carries Rein adapters (`{rein}`): they belong in the backbone weights file \
             (--backbone-weights), see docs/models.md#rein-adapters",
            path.display()
        );
    }
    let data = vars.data().lock().expect("var map lock is not poisoned");
    for (name, var) in data.iter() {
        let t = stored
            .get(name)
            .with_context(|| format!("{} lacks tensor `{name}`", path.display()))?;
        if t.dims() != var.dims() {
            bail!(
                "{}: tensor `{name}` is {:?} but the config needs {:?}",
                path.display(),
                t.dims(),
                var.dims()
            );
        }
        var.set(&t.to_dtype(DType::F32)?)?;
    }
    if let Some(extra) = stored.keys().find(|k| !data.contains_key(*k)) {
        bail!(
            "{}: unexpected tensor `{extra}` (config mismatch?)",
            path.display()
        );
    }
    drop(data);
    Ok((model, vars, meta))
}
