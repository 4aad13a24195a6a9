//! The temporal method a command or a node asks for: a baseline from its name and YAML
//! parameters, or STARS from a refiner checkpoint. Shared by `stars refine`, `stars run` and
//! the r2r temporal node.
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Device;

use super::stars::Stars;
use super::{Baseline, TemporalMethod};
use crate::model::stars;

/// A built temporal method and what to record about it.
pub struct OpenedMethod {
    pub method: Box<dyn TemporalMethod>,
    /// Parameters in effect (a baseline's config, or the refiner's config and checkpoint).
    pub params: serde_json::Value,
    /// True when a STARS refiner was trained on the random placeholder backbone.
    pub random_backbone: bool,
}

/// Builds the method `name`: `stars` loads `refiner` (required) onto `device`; a baseline
/// takes its parameters from the YAML file `config`, overriding its defaults.
pub fn open(
    name: &str,
    config: Option<&Path>,
    refiner: Option<&Path>,
    device: &Device,
) -> Result<OpenedMethod> {
    if name == "stars" {
        let Some(dir) = refiner else {
            bail!("method stars needs a refiner checkpoint (a folder from `stars train refiner`)");
        };
        if config.is_some() {
            bail!("a baseline config was given to stars: its settings are in its checkpoint");
        }
        let (model, _vars, meta) =
            stars::load(dir, device).with_context(|| format!("refiner {}", dir.display()))?;
        let params = serde_json::json!({
            "refiner": dir,
            "config": meta.config,
            "backbone_weights": meta.backbone_weights,
            "detector": meta.detector,
        });
        return Ok(OpenedMethod {
            method: Box::new(Stars::new(model)),
            params,
            random_backbone: meta.random_backbone,
        });
    }
    if refiner.is_some() {
        bail!("a refiner checkpoint is only for method stars, not {name}");
    }
    let yaml = match config {
        Some(path) => Some(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        None => None,
    };
    let baseline = Baseline::from_name(name, yaml.as_deref()).with_context(|| match config {
        Some(path) => format!("config {}", path.display()),
        None => format!("method {name}"),
    })?;
    Ok(OpenedMethod {
        method: baseline.build()?,
        params: baseline.params_json(),
        random_backbone: false,
    })
}
