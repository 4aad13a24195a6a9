//! `stars detect`.
use std::process::ExitCode;

/// Arguments of `stars detect`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`stars detect` is not implemented yet")
}
