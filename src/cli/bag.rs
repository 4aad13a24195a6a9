//! `stars bag`.
use std::process::ExitCode;

/// Subcommands of `stars bag`.
#[derive(clap::Subcommand, Debug)]
pub enum Command {}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {}
}
