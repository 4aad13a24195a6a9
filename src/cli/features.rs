//! `stars features`.
use std::process::ExitCode;

/// Arguments of `stars features`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`stars features` is not implemented yet")
}
