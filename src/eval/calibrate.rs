//! The alert threshold: the FPR@95 operating point, stored as YAML for the alert node.
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::Metrics;

/// `config/threshold.yaml`: pixels with score >= `threshold` are anomalous.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// The highest binned threshold whose pixel TPR is still >= 0.95.
    pub threshold: f64,
    /// Pixel TPR achieved at `threshold` on the calibration data.
    pub tpr: f64,
    /// Pixel FPR achieved at `threshold` on the calibration data.
    pub fpr: f64,
    /// Number of thresholds searched (linspace(0, 1, bins)).
    pub bins: usize,
    /// Where it was calibrated (prediction and ground-truth folders).
    pub source: String,
}

impl Threshold {
    /// Reads the operating point out of finished metrics; fails when the data had no
    /// anomalous or no normal pixel.
    pub fn from_metrics(metrics: &Metrics, source: String) -> Result<Self> {
        let Some(op) = metrics.operating_point else {
            bail!(
                "cannot calibrate: {}",
                metrics
                    .notes
                    .first()
                    .map_or("no operating point", String::as_str)
            );
        };
        Ok(Self {
            threshold: op.threshold,
            tpr: op.tpr,
            fpr: op.fpr,
            bins: metrics.bins,
            source,
        })
    }

    /// Reads a threshold file, checking that the threshold is a probability.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses threshold-file YAML; `what` names the source in errors.
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let t: Self = serde_yaml_ng::from_str(text).with_context(|| format!("parsing {what}"))?;
        if !(0.0..=1.0).contains(&t.threshold) {
            bail!("{what}: threshold {} is outside [0, 1]", t.threshold);
        }
        Ok(t)
    }

    /// Writes the file, creating its folder.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_yaml_ng::to_string(self)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_a_non_probability() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config/threshold.yaml");
        let t = Threshold {
            threshold: 0.5002,
            tpr: 0.96,
            fpr: 0.1,
            bins: 5000,
            source: "pred vs gt".into(),
        };
        t.save(&path).unwrap();
        assert_eq!(Threshold::load(&path).unwrap(), t);
        std::fs::write(&path, "threshold: 3\ntpr: 1\nfpr: 0\nbins: 2\nsource: x\n").unwrap();
        let err = format!("{:#}", Threshold::load(&path).unwrap_err());
        assert!(err.contains("outside [0, 1]"), "{err}");
    }
}
