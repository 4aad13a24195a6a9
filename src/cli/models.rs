//! `stars models`: the supported DINOv2 checkpoints and the Hugging Face cache.
use std::path::PathBuf;
use std::process::ExitCode;

use crate::model::weights::manifest::{self, Manifest};

use super::out::outln;

/// Subcommands of `stars models`.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// List the supported checkpoints and where each is cached.
    #[command(after_help = "Example:\n  stars models list --cache /data/hf-cache")]
    List {
        /// Hugging Face cache folder (default: $HF_HOME/hub or ~/.cache/huggingface/hub).
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
    },
    /// Download a checkpoint from the Hugging Face hub into the cache, check its key tensor
    /// shapes against the manifest, and print its folder.
    #[command(after_help = "\
Examples:
  stars models fetch dinov2-large
  stars models fetch dinov2-small --cache /data/hf-cache
  stars features --weights dinov2-small --cache /data/hf-cache --image f.png --out t.npy

A checkpoint already in the cache is found without network. Offline machines: fetch on a
connected one and copy the cache folder (see models/README.md).")]
    Fetch {
        /// Checkpoint name from `stars models list`, e.g. dinov2-large.
        name: String,
        /// Hugging Face cache folder (default: $HF_HOME/hub or ~/.cache/huggingface/hub).
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
    },
}

/// Runs `stars models`.
pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let manifest = Manifest::builtin()?;
    match cmd {
        Command::List { cache } => {
            let cache = manifest::cache(cache.as_deref());
            outln!(
                "{:<30} {:<38} {:<10} {:>9}  cached",
                "name",
                "hf_id",
                "arch",
                "registers"
            )?;
            for e in &manifest.models {
                let cached = e
                    .cached(&cache)
                    .map_or("-".to_string(), |p| p.display().to_string());
                outln!(
                    "{:<30} {:<38} {:<10} {:>9}  {cached}",
                    e.name,
                    e.hf_id,
                    e.arch,
                    e.registers
                )?;
            }
        }
        Command::Fetch { name, cache } => {
            let entry = manifest.get(&name)?;
            let cache = manifest::cache(cache.as_deref());
            let folder = match entry.cached(&cache) {
                Some(folder) => {
                    eprintln!("{name} is already in the cache");
                    folder
                }
                None => entry.fetch(cache)?,
            };
            entry.verify(&folder)?;
            outln!("{}", folder.display())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
