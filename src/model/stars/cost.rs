//! Analytic cost of one streamed frame: multiply-accumulates per stage and the f32 activations
//! it holds, so GPU work can be sized without running the paper preset.
//!
//! Streaming encodes each frame once and runs the temporal module on one window (the two earlier
//! fused frames are cached), which is what [`crate::temporal::stars`] does.
use super::{Config, WINDOW};
use crate::model::flowclas::backbone::REFINER_INPUT_SIZE;

/// Cost of one stage.
#[derive(Clone, Debug, PartialEq)]
pub struct StageCost {
    /// Stage name as in the model summary.
    pub stage: &'static str,
    /// Multiply-accumulates (1 MAC = 2 FLOPs).
    pub macs: u64,
    /// Elements of the activations this stage outputs.
    pub activations: u64,
}

/// Per-frame cost of the adapter on an `height x width` detector map.
pub fn per_frame(cfg: &Config, height: usize, width: usize) -> Vec<StageCost> {
    let (h, w, r) = (height as u64, width as u64, cfg.resolution as u64);
    // the feature grid of the resized frame (patches of 14 px)
    let grid = u64::from(REFINER_INPUT_SIZE / 14);
    let (gh, gw) = (grid, grid);
    let r2 = r * r;
    let c = cfg.feature_channels as u64;
    let feats = cfg.variant.uses_features();
    let k2 = (cfg.fusion_kernel * cfg.fusion_kernel) as u64;
    let (a, fh, cf) = (
        cfg.anomaly_channels as u64,
        cfg.fusion_hidden as u64,
        cfg.fused_channels as u64,
    );
    let (t1, t2, ah, rh, u) = (
        cfg.temporal_hidden as u64,
        cfg.temporal_out as u64,
        cfg.attention_hidden as u64,
        cfg.refiner_hidden as u64,
        cfg.confidence_hidden as u64,
    );
    let wn = WINDOW as u64;
    let fusion_in = cfg.fusion_in() as u64;
    let mut rows = vec![
        StageCost {
            stage: "resize map to R",
            macs: r * h * w + r * w * r,
            activations: r2,
        },
        StageCost {
            stage: "anomaly projection",
            macs: a * 9 * r2,
            activations: a * r2,
        },
    ];
    if feats {
        rows.push(StageCost {
            stage: "resize features to R",
            macs: c * (r * gh * gw + r * gw * r),
            activations: c * r2 + fusion_in * r2,
        });
    }
    rows.push(StageCost {
        stage: "fusion",
        macs: (fh * fusion_in + cf * fh) * k2 * r2,
        activations: (fh + cf) * r2,
    });
    if cfg.variant.uses_confidence() {
        rows.push(StageCost {
            stage: "confidence",
            macs: u * c * 9 * r2 + u * r2 + h * r * r + h * r * w,
            activations: u * r2 + r2 + h * w,
        });
    }
    rows.push(StageCost {
        stage: "temporal (one window)",
        macs: (t1 * cf + t2 * t1) * 27 * wn * r2
            + (t2 * ah + ah) * wn
            + t2 * t2 * wn * r2
            + rh * t2 * 9 * r2
            + rh * 9 * r2,
        activations: (t1 + t2) * wn * r2 + t2 * r2 + rh * r2 + r2,
    });
    rows.push(StageCost {
        stage: "residual at HxW",
        macs: h * r * r + h * r * w + 3 * h * w,
        activations: 3 * h * w,
    });
    rows
}
