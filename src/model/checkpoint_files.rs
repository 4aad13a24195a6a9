//! The file half of our checkpoints (detector and refiner): a folder holding the trainable
//! tensors as safetensors and everything else as JSON. Loading is strict: every variable the
//! model declares must be stored with its exact shape, and nothing else may be stored.
use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
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

/// Builds a model from the tensors `stored` (read from `path`), strictly: every variable
/// `build` asks for must be stored with its exact shape, and nothing else may be stored.
///
/// Each variable is the stored tensor itself (as an f32 [`Var`] in the returned map), never a
/// fresh allocation of the shape the config declares, so a hostile JSON half (a width of 2^40)
/// fails on the first shape that disagrees with the file instead of allocating that width.
pub fn build<M>(
    stored: HashMap<String, Tensor>,
    path: &Path,
    device: &Device,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<M>,
) -> Result<(M, VarMap)> {
    let vars = VarMap::new();
    let backend = Stored {
        tensors: &stored,
        vars: vars.clone(),
        path,
    };
    let model = build(VarBuilder::from_backend(
        Box::new(backend),
        DType::F32,
        device.clone(),
    ))?;
    let data = vars
        .data()
        .lock()
        .map_err(|_| anyhow!("the variable map of {} is poisoned", path.display()))?;
    let mut extra: Vec<&String> = stored.keys().filter(|k| !data.contains_key(*k)).collect();
    extra.sort();
    if let Some(extra) = extra.first() {
        bail!(
            "{}: unexpected tensor `{extra}` (config mismatch?)",
            path.display()
        );
    }
    drop(data);
    Ok((model, vars))
}

/// A [`VarBuilder`] backend that hands out the stored tensors as variables of `vars`.
struct Stored<'a> {
    tensors: &'a HashMap<String, Tensor>,
    vars: VarMap,
    path: &'a Path,
}

impl SimpleBackend for Stored<'_> {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let stored = self.get_unchecked(name, dtype, device)?;
        // `Error::Msg`, not candle's `bail!`: that one appends a backtrace when RUST_BACKTRACE
        // is set, and errors are one line.
        if stored.dims() != shape.dims() {
            return Err(candle_core::Error::Msg(format!(
                "{}: tensor `{name}` is {:?} but the config needs {:?}",
                self.path.display(),
                stored.dims(),
                shape.dims()
            )));
        }
        Ok(stored)
    }

    // The stored tensors were read onto the load device, the one every request names.
    fn get_unchecked(&self, name: &str, dtype: DType, _: &Device) -> candle_core::Result<Tensor> {
        let mut vars = self
            .vars
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("the variable map is poisoned".into()))?;
        if let Some(var) = vars.get(name) {
            return Ok(var.as_tensor().clone());
        }
        let stored = self.tensors.get(name).ok_or_else(|| {
            candle_core::Error::Msg(format!("{} lacks tensor `{name}`", self.path.display()))
        })?;
        let var = Var::from_tensor(&stored.to_dtype(dtype)?)?;
        let tensor = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}
