//! The `stars` command line: one file per verb, each with its `Args` and `run`.
//!
//! Exit codes follow ripgrep: 0 success, 1 "ran fine but a gate failed" where a verb has one,
//! 2 error. Errors print one line, `stars: <what failed>: <cause>`.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bag;
mod bench;
mod calibrate;
mod demo;
mod detect;
mod eval;
mod features;
mod model;
mod models;
mod out;
mod progress;
mod refine;
mod run;
mod synth;
mod train;

/// Temporal anomaly detection for space robotic inspection.
#[derive(Parser, Debug)]
#[command(name = "stars", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole pipeline on generated data and write a report (start here).
    Demo(demo::Args),
    /// Generate synthetic TALLO-layout sequences (frames, exact masks, meta.json).
    Synth(synth::Args),
    /// Convert TALLO-layout sequences to and from rosbag2 (MCAP), and inspect bags.
    #[command(subcommand)]
    Bag(bag::Command),
    /// Score anomaly maps against ground-truth masks (AUROC, AP, FPR@95, AUPRO).
    Eval(eval::Args),
    /// Find the FPR@95 operating threshold and write it for the alert node.
    Calibrate(calibrate::Args),
    /// Run the FlowCLAS detector over sequences and write its anomaly maps as .npy.
    Detect(detect::Args),
    /// Refine detector maps over time (EMA, centroid, Kalman, STARS) and write them as .npy.
    Refine(refine::Args),
    /// Run the DINOv2 backbone on an image or a tensor and write patch tokens as .npy.
    Features(features::Args),
    /// Train the detector (FlowCLAS) on TALLO-layout data.
    #[command(subcommand)]
    Train(train::Command),
    /// Run the four nodes (feature, detector, temporal, alert) in one process over a bag.
    Run(run::Args),
    /// Time the node graph on a bag's frames: per-stage latency, frames/s, plumbing cost.
    Bench(bench::Args),
    /// List and fetch supported pretrained weights.
    #[command(subcommand)]
    Models(models::Command),
    /// Describe a model preset: parameters per module and per-frame cost.
    #[command(subcommand)]
    Model(model::Command),
}

/// The `stars` command line: parses the arguments, runs the verb and turns its result into an
/// exit code (0 success, 1 a gate failed, 2 error).
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(cli.verbose);
    if cli.verbose < 2 {
        // candle captures a backtrace into its errors when RUST_BACKTRACE is set, and prints it
        // as part of the message; an error stays one line unless -vv asks for more. This
        // variable only governs std's Backtrace::capture, not panic messages.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    match execute(cli.command) {
        Ok(code) => code,
        Err(e) if out::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stars: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs one verb.
fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Demo(args) => demo::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Bag(cmd) => bag::run(cmd),
        Command::Eval(args) => eval::run(args),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Detect(args) => detect::run(args),
        Command::Refine(args) => refine::run(args),
        Command::Features(args) => features::run(args),
        Command::Train(cmd) => train::run(cmd),
        Command::Models(cmd) => models::run(cmd),
        Command::Model(cmd) => model::run(cmd),
        Command::Run(args) => run::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
