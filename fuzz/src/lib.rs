//! Shared by the fuzz targets and the seed maker: how one fuzz input holds several files, and
//! the loaders a checkpoint input is fed to.
use std::path::Path;

use anyhow::Result;
use candle_core::Device;
use stars::model::weights::{load_dinov2, LoadOptions};
use stars::model::{flowclas, stars as refiner};

/// Joins files into one input: each but the last is a little-endian `u32` length then its
/// bytes; the last takes the rest.
pub fn join(files: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some((last, rest)) = files.split_last() {
        for f in rest {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
        out.extend_from_slice(last);
    }
    out
}

/// Splits an input made by [`join`] into `n` files; `None` when the lengths do not fit.
pub fn split(mut data: &[u8], n: usize) -> Option<Vec<&[u8]>> {
    let mut files = Vec::with_capacity(n);
    for _ in 1..n {
        let (len, rest) = data.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return None;
        }
        let (file, rest) = rest.split_at(len);
        files.push(file);
        data = rest;
    }
    files.push(data);
    Some(files)
}

/// The checkpoint kinds a `checkpoint` input can be: its first byte modulo their count picks
/// one, the rest is [`join`] of the files it lists (a DINOv2 without `config.json` is in
/// torch-hub naming, with one in Hugging Face naming).
pub const CHECKPOINT_KINDS: [(&str, &[&str]); 4] = [
    (
        "detector",
        &[flowclas::DETECTOR_JSON, flowclas::DETECTOR_WEIGHTS],
    ),
    (
        "refiner",
        &[refiner::REFINER_JSON, refiner::REFINER_WEIGHTS],
    ),
    ("dinov2_hub", &["model.safetensors"]),
    ("dinov2_hf", &["config.json", "model.safetensors"]),
];

/// Loads the checkpoint of kind `kind` (an index of [`CHECKPOINT_KINDS`]) from `dir`.
pub fn load_checkpoint(kind: usize, dir: &Path) -> Result<()> {
    match kind {
        0 => flowclas::load(dir, &Device::Cpu).map(drop),
        1 => refiner::load(dir, &Device::Cpu).map(drop),
        _ => load_dinov2(dir, &Device::Cpu, &LoadOptions::default()).map(drop),
    }
}
