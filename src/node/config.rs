//! `config/stars.yaml`: every node's parameters in ROS 2 params-file form,
//! `<node_name>: {ros__parameters: {...}}`, so `stars run` and the r2r nodes read one file.
//!
//! Each node's parameter struct (in its own file) holds its defaults in `Default`; a missing key
//! takes the default, an unknown key or a wrong type is a one-line error naming the file.
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::alert::AlertParams;
use super::detector::DetectorParams;
use super::feature::FeatureParams;
use super::temporal::TemporalParams;

/// One node's section: ROS 2 nests parameters under `ros__parameters`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section<P> {
    /// The node's parameters.
    #[serde(rename = "ros__parameters", default)]
    pub params: P,
}

/// All four nodes' parameters.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphConfig {
    /// `feature_node`.
    pub feature_node: Section<FeatureParams>,
    /// `detector_node`.
    pub detector_node: Section<DetectorParams>,
    /// `temporal_node`.
    pub temporal_node: Section<TemporalParams>,
    /// `alert_node`.
    pub alert_node: Section<AlertParams>,
}

impl GraphConfig {
    /// Parses YAML text; `what` names the source in errors.
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let cfg: Self = serde_yaml_ng::from_str(text).with_context(|| format!("parsing {what}"))?;
        cfg.validate().with_context(|| format!("checking {what}"))?;
        Ok(cfg)
    }

    /// Reads and checks a parameter file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<()> {
        self.feature_node.params.validate()?;
        self.detector_node.params.validate()?;
        self.temporal_node.params.validate()?;
        self.alert_node.params.validate()
    }
}

/// Fails with `node.key: value is outside range` unless `ok`.
pub(crate) fn check(ok: bool, key: &str, value: impl std::fmt::Display, range: &str) -> Result<()> {
    anyhow::ensure!(ok, "{key}: {value} is outside {range}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_is_complete_and_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/stars.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = GraphConfig::parse(&text, "stars.yaml").unwrap();
        assert_eq!(cfg, GraphConfig::default());
        // Every parameter is spelled out (none left to defaults): serialise the defaults' keys
        // and find each in the file.
        for key in [
            "input_size",
            "queue_depth",
            "max_gap_s",
            "buffer_size",
            "feature_timeout_s",
            "overlay_alpha",
            "threshold_file",
            "min_area_px",
            "k",
            "n",
            "stale_after_s",
            "hardware_id",
        ] {
            assert!(text.contains(&format!("{key}:")), "{key} missing");
        }
    }

    #[test]
    fn unknown_keys_wrong_types_and_ranges_are_one_line_errors() {
        let cases = [
            (
                "alert_node: {ros__parameters: {kk: 3}}",
                "unknown field `kk`",
            ),
            ("alert_node: {ros__parameters: {k: three}}", "invalid type"),
            ("alerts_node: {}", "unknown field `alerts_node`"),
            (
                "alert_node: {ros__parameters: {k: 4, n: 3}}",
                "alert_node.k",
            ),
            (
                "temporal_node: {ros__parameters: {overlay_alpha: 2}}",
                "overlay_alpha",
            ),
        ];
        for (text, needle) in cases {
            let err = format!("{:#}", GraphConfig::parse(text, "x.yaml").unwrap_err());
            assert!(
                err.contains(needle) && err.contains("x.yaml"),
                "{text}: {err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
