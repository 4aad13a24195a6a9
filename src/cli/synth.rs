//! `stars synth`.
use std::process::ExitCode;

/// Arguments of `stars synth`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`stars synth` is not implemented yet")
}
