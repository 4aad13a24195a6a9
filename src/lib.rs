//! `stars`: temporal anomaly detection for space robotic inspection.
//!
//! A frozen single-frame detector (FlowCLAS: DINOv2 features + a normalizing flow) produces
//! per-pixel anomaly maps; STARS, a light temporal adapter, refines them over a 3-frame window.
//! The modules follow the topic graph and depend only downward:
//!
//! | module  | concern |
//! |---------|---------|
//! | [`msg`]   | message structs and their CDR encoding (no ROS, no ML) |
//! | [`bag`]   | rosbag2 directories (metadata.yaml + MCAP) on top of `msg` |
//! | [`data`]  | TALLO-layout reader and the synthetic TALLO generator |
//! | [`model`] | candle modules: DINOv2, FlowCLAS |
//! | [`train`] | losses and training loops |
//! | [`detect`] | the trained detector over a split: one map per frame, as `.npy` |
//! | [`temporal`] | the `TemporalMethod` trait: STARS and the temporal baselines |
//! | [`eval`]  | streaming pixel metrics, calibration, reports |
//! | [`node`]  | the four nodes' logic and the in-process graph |
//! | [`viz`]   | colormaps, overlays, contact sheets |
//! | `cli`     | the `stars` command; only its entry point [`main`] is public |
// Nothing read from a file, a message or a parameter may panic the library: errors are
// returned. The few `expect`s left state invariants of our own code, each with its reason
// (`#[expect(clippy::expect_used, reason = ...)]`, listed in docs/reliability.md).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
pub mod bag;
mod cli;
pub mod data;
pub mod detect;
pub mod eval;
pub mod model;
pub mod msg;
pub mod node;
pub mod progress;
pub mod temporal;
pub mod train;
pub mod viz;

pub use cli::main;
