//! On-disk cache of backbone features per training view, so the flow trains on CPU without
//! re-running the backbone every epoch. One safetensors file per view, named by the SHA-256 of
//! its key: the caller's backbone description, the view's full recipe (frame, crop, flips,
//! paste) and a digest of the files it reads (`train::detector`).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

/// A folder of cached `(features, labels)` pairs; `None` disables caching.
#[derive(Debug, Clone)]
pub struct FeatureCache {
    dir: Option<PathBuf>,
}

impl FeatureCache {
    /// A cache in `dir` (created on first write), or no cache.
    pub fn new(dir: Option<&Path>) -> Self {
        Self {
            dir: dir.map(Path::to_path_buf),
        }
    }

    /// The file a key maps to.
    fn path(&self, key: &str) -> Option<PathBuf> {
        let digest = Sha256::digest(key.as_bytes());
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{name}.safetensors")))
    }

    /// Returns the cached `(features, labels)` for `key`, computing and storing them on a miss.
    /// The bool says whether it was a hit.
    pub fn get_or_compute(
        &self,
        key: &str,
        device: &Device,
        compute: impl FnOnce() -> Result<(Tensor, Tensor)>,
    ) -> Result<((Tensor, Tensor), bool)> {
        let Some(path) = self.path(key) else {
            return Ok((compute()?, false));
        };
        if path.is_file() {
            let mut stored = candle_core::safetensors::load(&path, device)
                .with_context(|| format!("reading cached features {}", path.display()))?;
            if let (Some(f), Some(l)) = (stored.remove("features"), stored.remove("labels")) {
                return Ok(((f, l), true));
            }
        }
        let (features, labels) = compute()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // write then rename, so an interrupted run never leaves a truncated entry behind
        let tmp = path.with_extension("tmp");
        let tensors = HashMap::from([("features", features.clone()), ("labels", labels.clone())]);
        candle_core::safetensors::save(&tensors, &tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(((features, labels), false))
    }
}

/// SHA-256 over the bytes of `files` (each length-prefixed), hex: cache keys name content, so a
/// file replaced at the same path never reuses stale entries.
pub fn digest_files(files: &[&std::path::Path]) -> Result<String> {
    let mut hasher = Sha256::new();
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lookup_hits_and_keys_are_distinct() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let cache = FeatureCache::new(Some(tmp.path()));
        let dev = Device::Cpu;
        let make = |v: f32| {
            let dev = dev.clone();
            move || {
                let labels = Tensor::zeros((1, 1), candle_core::DType::U8, &dev)?;
                Ok((Tensor::full(v, (2, 1, 1), &dev)?, labels))
            }
        };
        let ((a, _), hit) = cache.get_or_compute("k1", &dev, make(1.0))?;
        assert!(!hit);
        let ((b, _), hit) = cache.get_or_compute("k1", &dev, make(2.0))?;
        assert!(hit);
        assert_eq!(a.to_vec3::<f32>()?, b.to_vec3::<f32>()?);
        let ((c, _), hit) = cache.get_or_compute("k2", &dev, make(3.0))?;
        assert!(!hit);
        assert_eq!(c.flatten_all()?.to_vec1::<f32>()?, [3.0, 3.0]);
        Ok(())
    }
}
