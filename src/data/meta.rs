//! `meta.json`: what a sequence's renderer knew (camera, poses, sun, anomaly), one per sequence.
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Pinhole intrinsics in pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Intrinsics {
    pub fx: f64,
    pub fy: f64,
    pub cx: f64,
    pub cy: f64,
}

/// Camera pose of one frame: position in the station frame (metres) and a camera-to-world
/// rotation, row-major; the camera looks along its +z, x right, y down (OpenCV convention).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FramePose {
    pub index: u32,
    pub position: [f64; 3],
    pub rotation: [[f64; 3]; 3],
    /// Unit vector towards the sun for this frame (jittered per frame).
    pub sun_direction: [f64; 3],
}

/// An object placed in the scene at a fixed world position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlacedObject {
    /// `blanket`, `cable`, `tool`, `satellite` for anomalies; a shape name for hard negatives.
    pub class: String,
    pub position: [f64; 3],
    /// Bounding radius in metres.
    pub radius: f64,
}

/// Everything `meta.json` records for one sequence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SequenceMeta {
    pub sequence_id: String,
    pub split: String,
    pub camera_id: u32,
    /// `walk` (train/val) or `arc_left`, `arc_right`, `arc_up`, `arc_down` (test).
    pub trajectory: String,
    pub width: u32,
    pub height: u32,
    pub intrinsics: Intrinsics,
    pub frames: Vec<FramePose>,
    /// The anomaly of this sequence, or `None` for a clean sequence.
    pub anomaly: Option<PlacedObject>,
    /// Training hard negatives (train/val only; labelled apart from anomalies).
    #[serde(default)]
    pub hard_negatives: Vec<PlacedObject>,
    pub seed: u64,
    /// World position of the grapple fixture the trajectory is built around (synthetic data).
    #[serde(default)]
    pub fixture: Option<[f64; 3]>,
}

impl SequenceMeta {
    /// Reads and parses a `meta.json`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `meta.json`, pretty-printed so diffs of generated data stay readable.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}
