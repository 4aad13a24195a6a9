//! The supported checkpoints (`models/manifest.yaml`, compiled in) and the Hugging Face cache
//! they are fetched into: looked up offline first, downloaded with `hf-hub` only on
//! `stars models fetch`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use hf_hub::{Cache, Repo, RepoType};

use crate::model::dinov2::Config;

const MANIFEST: &str = include_str!("../../../models/manifest.yaml");

/// The list of supported checkpoints.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Manifest {
    /// One entry per checkpoint.
    pub models: Vec<Entry>,
}

/// One supported checkpoint.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Entry {
    /// Short name used on the command line (`dinov2-large`).
    pub name: String,
    /// Hugging Face repository id (`facebook/dinov2-large`).
    pub hf_id: String,
    /// Branch or commit.
    pub revision: String,
    /// `Config` preset: vit_small, vit_base, vit_large or vit_giant.
    pub arch: String,
    /// Register tokens.
    pub registers: usize,
    /// Files of the repository that make the checkpoint.
    pub files: Vec<String>,
    /// sha256 of model.safetensors when recorded.
    pub sha256: Option<String>,
    /// The original torch-hub `.pth`.
    pub torch_hub_url: Option<String>,
    /// Expected shapes of key tensors (Hugging Face names).
    pub shapes: BTreeMap<String, Vec<usize>>,
}

impl Manifest {
    /// The manifest compiled into this binary.
    pub fn builtin() -> anyhow::Result<Self> {
        serde_yaml_ng::from_str(MANIFEST).context("parsing models/manifest.yaml")
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> anyhow::Result<&Entry> {
        self.models
            .iter()
            .find(|e| e.name == name)
            .with_context(|| {
                let names: Vec<&str> = self.models.iter().map(|e| e.name.as_str()).collect();
                format!("unknown model {name:?}; known: {}", names.join(", "))
            })
    }
}

impl Entry {
    /// The architecture this checkpoint has.
    pub fn config(&self) -> anyhow::Result<Config> {
        let cfg = match self.arch.as_str() {
            "vit_small" => Config::vit_small(),
            "vit_base" => Config::vit_base(),
            "vit_large" => Config::vit_large(),
            "vit_giant" => Config::vit_giant(),
            other => bail!("model {}: unknown arch {other:?}", self.name),
        };
        Ok(cfg.with_registers(self.registers))
    }

    fn repo(&self) -> Repo {
        Repo::with_revision(self.hf_id.clone(), RepoType::Model, self.revision.clone())
    }

    /// The snapshot folder holding all of this checkpoint's files in `cache`, if fetched.
    pub fn cached(&self, cache: &Cache) -> Option<PathBuf> {
        let repo = cache.repo(self.repo());
        let paths: Option<Vec<PathBuf>> = self.files.iter().map(|f| repo.get(f)).collect();
        let first = paths?.into_iter().next()?;
        first.parent().map(Path::to_path_buf)
    }

    /// Checks the key tensor shapes of `folder/model.safetensors` against the manifest, from the
    /// file's header only.
    pub fn verify(&self, folder: &Path) -> anyhow::Result<()> {
        let file = folder.join("model.safetensors");
        let header = safetensors_header(&file)?;
        for (name, want) in &self.shapes {
            let got = header
                .get(name)
                .and_then(|t| t.get("shape"))
                .and_then(|s| serde_json::from_value::<Vec<usize>>(s.clone()).ok());
            match got {
                Some(got) if &got == want => {}
                Some(got) => bail!(
                    "{} is not {}: {name} is {got:?}, expected {want:?}",
                    file.display(),
                    self.hf_id
                ),
                None => bail!("{} is not {}: it lacks {name}", file.display(), self.hf_id),
            }
        }
        Ok(())
    }

    /// Downloads the missing files into `cache` (network) and returns the snapshot folder.
    pub fn fetch(&self, cache: Cache) -> anyhow::Result<PathBuf> {
        let api = hf_hub::api::sync::ApiBuilder::from_cache(cache)
            .with_progress(true)
            .build()
            .context("starting the Hugging Face client")?;
        let repo = api.repo(self.repo());
        let mut folder = None;
        for file in &self.files {
            let path = repo
                .get(file)
                .with_context(|| format!("downloading {file} of {}", self.hf_id))?;
            folder = path.parent().map(Path::to_path_buf);
        }
        folder.with_context(|| format!("model {} lists no files", self.name))
    }
}

/// The JSON header of a safetensors file (tensor name -> dtype, shape, offsets).
fn safetensors_header(file: &Path) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    use std::io::Read;
    let read = || -> anyhow::Result<_> {
        let mut f = std::fs::File::open(file)?;
        let mut len = [0u8; 8];
        f.read_exact(&mut len)?;
        let len = u64::from_le_bytes(len);
        // the format caps headers at 100 MB
        if len > 100_000_000 {
            bail!("header of {len} bytes");
        }
        let mut header = vec![0u8; len as usize];
        f.read_exact(&mut header)?;
        Ok(serde_json::from_slice(&header)?)
    };
    read().with_context(|| format!("reading the safetensors header of {}", file.display()))
}

/// The Hugging Face cache: `dir` when given, else `$HF_HOME/hub` or `~/.cache/huggingface/hub`.
pub fn cache(dir: Option<&Path>) -> Cache {
    match dir {
        Some(d) => Cache::new(d.to_path_buf()),
        None => Cache::from_env(),
    }
}

/// Resolves `--weights`: an existing file or folder is used as is; a manifest name is looked
/// up in the cache (offline). Anything else is an error saying what to do.
pub fn resolve(weights: &str, cache_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(weights);
    if path.exists() {
        return Ok(path);
    }
    let manifest = Manifest::builtin()?;
    match manifest.get(weights) {
        Ok(entry) => {
            let cache = cache(cache_dir);
            entry.cached(&cache).with_context(|| {
                format!(
                    "weights {weights} are not in the cache {}: run `stars models fetch {weights}` \
                     on a connected machine (or pass --weights PATH to a .safetensors file)",
                    cache.path().display()
                )
            })
        }
        Err(_) => bail!(
            "no weights at {weights}: pass a .safetensors file, a folder with model.safetensors, \
             or a name from `stars models list` fetched with `stars models fetch NAME`"
        ),
    }
}
