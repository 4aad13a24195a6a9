//! `stars calibrate`.
use std::process::ExitCode;

/// Arguments of `stars calibrate`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`stars calibrate` is not implemented yet")
}
