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
//! | [`temporal`] | the `TemporalMethod` trait: STARS and the temporal baselines |
//! | [`eval`]  | streaming pixel metrics, calibration, reports |
//! | [`viz`]   | colormaps, overlays, contact sheets |
//! | [`cli`]   | the `stars` command |
pub mod bag;
pub mod cli;
pub mod data;
pub mod eval;
pub mod model;
pub mod msg;
pub mod progress;
pub mod temporal;
pub mod train;
pub mod viz;
