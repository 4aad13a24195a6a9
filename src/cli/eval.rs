//! `stars eval`.
use std::process::ExitCode;

/// Arguments of `stars eval`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`stars eval` is not implemented yet")
}
