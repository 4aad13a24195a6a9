//! The file half of our checkpoints (detector and refiner): a folder holding the trainable
//! tensors as safetensors and everything else as JSON. Loading is strict: every variable the
//! model declares must be stored with its exact shape, and nothing else may be stored.
use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Writes `vars` as `dir/weights` and `meta` as `dir/json` (the folder is created).
pub fn save(
    dir: &Path,
    weights: &str,
    vars: &VarMap,
    json: &str,
    meta: &impl Serialize,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(weights);
    vars.save(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    let path = dir.join(json);
    std::fs::write(&path, serde_json::to_string_pretty(meta)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads `dir/json`; `what` names the kind of checkpoint in the error (`a detector`).
pub fn load_meta<T: DeserializeOwned>(dir: &Path, json: &str, what: &str) -> Result<T> {
    let path = dir.join(json);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is {} {what} checkpoint?)",
            path.display(),
            dir.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Reads the safetensors file at `path`.
pub fn read_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device)
        .with_context(|| format!("reading {}", path.display()))
}

/// Sets every variable of `vars` from `stored` (read from `path`), strictly.
pub fn fill(vars: &VarMap, stored: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let data = vars.data().lock().expect("var map lock is not poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
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
    let mut extra: Vec<&String> = stored.keys().filter(|k| !data.contains_key(*k)).collect();
    extra.sort();
    if let Some(extra) = extra.first() {
        bail!(
            "{}: unexpected tensor `{extra}` (config mismatch?)",
            path.display()
        );
    }
    Ok(())
}
