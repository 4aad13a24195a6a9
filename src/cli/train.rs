//! `stars train`.
use std::process::ExitCode;

/// Subcommands of `stars train`.
#[derive(clap::Subcommand, Debug)]
pub enum Command {}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {}
}
