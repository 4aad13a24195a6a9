//! The four nodes of the topic graph (feature, detector, temporal, alert) as plain logic.
//!
//! Each node is a struct implementing [`Node`]: it is handed one message of a topic it
//! subscribes to and returns what it publishes ([`Publication`]s), so tests drive it with timed
//! messages and no runtime; [`inproc`] wires the four as tokio tasks in one process (`stars
//! run`), and the r2r binding (feature `ros2`) will call the same `handle`. A [`Bus`] is where
//! publications go: the in-process graph's router, later r2r publishers.
//!
//! Clocks: a node never reads the wall clock. Time is the input's clock — header stamps, and
//! [`Node::on_clock`] ticks from whoever plays the input (the bag's recorded time during
//! replay, as `use_sim_time` makes it on the rig) — so replay at any rate gives the same output.
//!
//! Node code calls `model` and `temporal`; it never builds a tensor layer, and model code never
//! sees a topic.
pub mod alert;
pub mod config;
pub mod detector;
pub mod feature;
pub mod health;
pub mod inproc;
pub mod maps;
pub mod recorder;
#[cfg(feature = "ros2")]
pub mod ros;
pub mod stages;
pub mod temporal;

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::msg::{Bool, DiagnosticArray, Image};

/// Topic names of the contract (DESIGN.md); the r2r binding makes them relative and remappable.
pub mod topics {
    /// Camera frames (rgb8, bgr8, mono8, rgba8, bgra8).
    pub const CAMERA: &str = "/camera/image_raw";
    /// Ground-truth masks of bags made from TALLO-layout data (evaluation only).
    pub const GT_MASK: &str = "/tallo/gt_mask";
    /// DINOv2 patch features at 224x224 (`32FC<C>`, 16x16 grid).
    pub const FEATURES: &str = "/stars/features";
    /// The single-frame detector's map (32FC1 in [0, 1], the frame's size).
    pub const DETECTOR_MAP: &str = "/stars/detector/anomaly_map";
    /// The temporally refined map (32FC1 in [0, 1], the frame's size).
    pub const REFINED_MAP: &str = "/stars/refined/anomaly_map";
    /// The refined map as a colormap blended on the frame (rgb8, the frame's size).
    pub const REFINED_OVERLAY: &str = "/stars/refined/overlay";
    /// Whether the alert is raised (`std_msgs/Bool`, reliable, transient local).
    pub const ALERT_ACTIVE: &str = "/stars/alert/active";
    /// The alert's state with score, threshold, area, bbox, stamp (`DiagnosticArray`).
    pub const ALERT_STATUS: &str = "/stars/alert/status";
    /// Node health (`DiagnosticArray`), e.g. the temporal node's pass-through WARN.
    pub const DIAGNOSTICS: &str = "/diagnostics";
}

/// A message on the bus: one of the `msg` structs the graph exchanges.
#[derive(Clone, Debug, PartialEq)]
pub enum Msg {
    /// `sensor_msgs/Image`: frames, maps, features, overlays.
    Image(Image),
    /// `std_msgs/Bool`: the alert flag.
    Bool(Bool),
    /// `diagnostic_msgs/DiagnosticArray`: alert status and node health.
    Diagnostics(DiagnosticArray),
}

impl Msg {
    /// The image, or an error naming what arrived instead.
    pub fn image(&self) -> Result<&Image> {
        match self {
            Self::Image(image) => Ok(image),
            other => anyhow::bail!("expected sensor_msgs/Image, got {}", other.type_name()),
        }
    }

    /// The ROS type name of the message.
    pub fn type_name(&self) -> &'static str {
        use crate::msg::Message;
        match self {
            Self::Image(_) => Image::TYPE.name,
            Self::Bool(_) => Bool::TYPE.name,
            Self::Diagnostics(_) => DiagnosticArray::TYPE.name,
        }
    }
}

impl From<Image> for Msg {
    fn from(m: Image) -> Self {
        Self::Image(m)
    }
}

impl From<Bool> for Msg {
    fn from(m: Bool) -> Self {
        Self::Bool(m)
    }
}

impl From<DiagnosticArray> for Msg {
    fn from(m: DiagnosticArray) -> Self {
        Self::Diagnostics(m)
    }
}

/// One message a node publishes.
#[derive(Clone, Debug, PartialEq)]
pub struct Publication {
    /// The topic, one of [`topics`].
    pub topic: &'static str,
    /// The message.
    pub msg: Msg,
}

impl Publication {
    /// `msg` on `topic`.
    pub fn new(topic: &'static str, msg: impl Into<Msg>) -> Self {
        Self {
            topic,
            msg: msg.into(),
        }
    }
}

/// A node's logic: typed messages in, publications out, no transport.
pub trait Node: Send {
    /// The node's name (the key of its section in `config/stars.yaml`).
    fn name(&self) -> &'static str;
    /// The topics it subscribes to.
    fn subscriptions(&self) -> Vec<&'static str>;
    /// Depth of its queue for `topic`, given its `queue_depth` parameter `depth`: by default
    /// the same for every topic.
    fn queue_depth(&self, _topic: &str, depth: usize) -> usize {
        depth
    }
    /// The topics it publishes on (the r2r binding creates their publishers up front).
    fn publications(&self) -> Vec<&'static str>;
    /// Handles one message of `topic`. An error is about this message only (bad data): the
    /// caller logs and counts it and goes on.
    fn handle(&mut self, topic: &str, msg: Arc<Msg>) -> Result<Vec<Publication>>;
    /// The input clock reached `now_ns` (watchdogs run here); nothing by default.
    fn on_clock(&mut self, _now_ns: i64) -> Vec<Publication> {
        Vec::new()
    }
    /// Named counters for the run summary and diagnostics (drops, mismatches, NaN maps...).
    fn counters(&self) -> Vec<(&'static str, u64)>;
}

/// Where publications go: the in-process graph's router, later r2r publishers.
pub trait Bus {
    /// Publishes `msg` on `topic` to every subscriber.
    fn publish(&self, topic: &str, msg: Arc<Msg>);
}

/// Publishes each of `outputs` on `bus`.
pub fn publish_all(bus: &dyn Bus, outputs: Vec<Publication>) {
    for p in outputs {
        bus.publish(p.topic, Arc::new(p.msg));
    }
}

/// The image message received on `topic` and its frame as RGB (any encoding a camera may use).
pub fn camera_frame<'m>(topic: &str, msg: &'m Msg) -> Result<(&'m Image, image::RgbImage)> {
    let image = msg.image().with_context(|| format!("on {topic}"))?;
    let frame = image
        .to_rgb8()
        .with_context(|| format!("frame on {topic}"))?;
    Ok((image, frame))
}

/// Nanoseconds of a header stamp as the signed clock nodes use (stamps before 1970 are 0).
pub fn stamp_ns(header: &crate::msg::Header) -> i64 {
    header
        .stamp
        .to_nanos()
        .and_then(|n| i64::try_from(n).ok())
        .unwrap_or(0)
}

/// Seconds of a parameter as nanoseconds of the input clock.
pub fn seconds_to_ns(s: f64) -> i64 {
    (s * 1e9).round() as i64
}
