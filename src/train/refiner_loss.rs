//! The STARS training losses (Sec. III-E, Eqs. 6-9; spec in `docs/spec/stars.md`):
//! `L = 0.5 L_contrast + lambda_t L_temp + 1.0 L_corr`, lambda_t ramped to 0.3.
use candle_core::{bail, DType, Result, Tensor};

/// lambda_c of Eq. 9.
pub const LAMBDA_CONTRAST: f64 = 0.5;
/// lambda_t of Eq. 9 (reached after the ramp).
pub const LAMBDA_TEMPORAL: f64 = 0.3;
/// lambda_corr of Eq. 9.
pub const LAMBDA_CORRECTION: f64 = 1.0;
/// alpha of Eq. 8 (weight of L_improve).
pub const ALPHA_IMPROVE: f64 = 0.5;
/// beta of Eq. 8 (weight of L_degrade).
pub const BETA_DEGRADE: f64 = 1.0;
/// m of Eq. 6.
pub const MARGIN: f64 = 1.0;
/// A pixel the detector "already got right": its error is below this.
pub const CORRECT_ERROR: f64 = 0.5;
/// Probabilities are kept in [EPS, 1 - EPS] inside the BCE logarithms.
const EPS: f64 = 1e-6;

/// log(1 + exp(x)) without overflow: relu(x) + log(1 + exp(-|x|)).
fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// Euclidean distance between two vectors `(D,)` (a tiny epsilon keeps sqrt differentiable at 0).
fn distance(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    ((a - b)?.sqr()?.sum_all()? + 1e-12)?.sqrt()
}

/// Eq. 6: sum over the two positives of log(1 + exp(d(a, p_i) - d(a, n) + m)), on pooled
/// sequence embeddings `(D,)`.
pub fn dual_triplet(
    anchor: &Tensor,
    positives: [&Tensor; 2],
    negative: &Tensor,
    margin: f64,
) -> Result<Tensor> {
    let d_an = distance(anchor, negative)?;
    let mut total = Tensor::zeros((), anchor.dtype(), anchor.device())?;
    for p in positives {
        let x = ((distance(anchor, p)? - &d_an)? + margin)?;
        total = (total + softplus(&x)?)?;
    }
    Ok(total)
}

/// Eq. 7: mean over t >= 1 of 1 - cos(F_t, F_{t-1}) with each frame `fused[t]` flattened.
pub fn temporal_consistency(fused: &Tensor) -> Result<Tensor> {
    let t = fused.dim(0)?;
    if t < 2 {
        return Tensor::zeros((), fused.dtype(), fused.device());
    }
    let flat = fused.flatten_from(1)?;
    let (cur, prev) = (flat.narrow(0, 1, t - 1)?, flat.narrow(0, 0, t - 1)?);
    let dot = (&cur * &prev)?.sum(1)?;
    let norms = (cur.sqr()?.sum(1)?.sqrt()? * prev.sqr()?.sum(1)?.sqrt()?)?;
    let cos = dot.div(&(norms + 1e-12)?)?;
    cos.affine(-1.0, 1.0)?.mean_all()
}

/// The parts of Eq. 8, each a scalar tensor.
#[derive(Debug, Clone)]
pub struct CorrectionLoss {
    /// BCE + alpha L_improve + beta L_degrade.
    pub total: Tensor,
    /// Binary cross-entropy of the refined map against the target.
    pub bce: Tensor,
    /// Mean over valid pixels of relu(e_ref - e_det).
    pub improve: Tensor,
    /// Mean over valid pixels with e_det < 0.5 of relu(e_ref - e_det).
    pub degrade: Tensor,
}

/// Eq. 8 on maps of one shape: `refined` and `detector` in [0, 1], `target` 0/1 and `valid` 0/1
/// (ignored pixels are 0 and count nowhere). With e = |map - target| per pixel (ours):
/// L_improve = mean_valid relu(e_ref - e_det), L_degrade = the same over pixels with e_det < 0.5.
pub fn correction(
    refined: &Tensor,
    detector: &Tensor,
    target: &Tensor,
    valid: &Tensor,
) -> Result<CorrectionLoss> {
    if refined.dims() != detector.dims()
        || refined.dims() != target.dims()
        || refined.dims() != valid.dims()
    {
        bail!(
            "correction loss: refined {:?}, detector {:?}, target {:?}, valid {:?} differ",
            refined.dims(),
            detector.dims(),
            target.dims(),
            valid.dims()
        )
    }
    let dtype = refined.dtype();
    let (detector, target, valid) = (
        detector.to_dtype(dtype)?,
        target.to_dtype(dtype)?,
        valid.to_dtype(dtype)?,
    );
    let masked_mean = |x: &Tensor, mask: &Tensor| -> Result<Tensor> {
        let n = mask.sum_all()?;
        let denom = n.maximum(&Tensor::ones((), dtype, n.device())?)?;
        (x * mask)?.sum_all()?.div(&denom)
    };
    let p = refined.clamp(EPS, 1.0 - EPS)?;
    let bce = ((&target * p.log()?)?
        + (target.affine(-1.0, 1.0)? * p.affine(-1.0, 1.0)?.log()?)?)?
    .neg()?;
    let bce = masked_mean(&bce, &valid)?;
    let e_ref = (refined - &target)?.abs()?;
    let e_det = (&detector - &target)?.abs()?;
    let worse = (e_ref - &e_det)?.relu()?;
    let improve = masked_mean(&worse, &valid)?;
    let correct = (e_det.lt(CORRECT_ERROR)?.to_dtype(dtype)? * &valid)?;
    let degrade = masked_mean(&worse, &correct)?;
    let total = ((&bce + (&improve * ALPHA_IMPROVE)?)? + (&degrade * BETA_DEGRADE)?)?;
    Ok(CorrectionLoss {
        total,
        bce,
        improve,
        degrade,
    })
}

/// lambda_t after `progress` epochs (fractional): linear from 0 to 0.3 over `ramp_epochs`.
pub fn temporal_weight(progress: f64, ramp_epochs: f64) -> f64 {
    if ramp_epochs <= 0.0 {
        return LAMBDA_TEMPORAL;
    }
    LAMBDA_TEMPORAL * (progress / ramp_epochs).clamp(0.0, 1.0)
}

/// Eq. 9 from its parts.
pub fn total(contrast: &Tensor, temporal: &Tensor, corr: &Tensor, lambda_t: f64) -> Result<Tensor> {
    let c = (contrast.to_dtype(DType::F32)? * LAMBDA_CONTRAST)?;
    let t = (temporal.to_dtype(DType::F32)? * lambda_t)?;
    let r = (corr.to_dtype(DType::F32)? * LAMBDA_CORRECTION)?;
    (c + t)? + r
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn scalar(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    fn vec(v: &[f64]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn dual_triplet_by_hand() -> Result<()> {
        // a = (0, 0), p1 = (3, 4) (d 5), p2 = (1, 0) (d 1), n = (0, 2) (d 2), m = 1:
        // log(1 + e^(5 - 2 + 1)) + log(1 + e^(1 - 2 + 1)) = log(1 + e^4) + log 2
        let got = dual_triplet(
            &vec(&[0.0, 0.0]),
            [&vec(&[3.0, 4.0]), &vec(&[1.0, 0.0])],
            &vec(&[0.0, 2.0]),
            MARGIN,
        )?;
        let want = (1.0 + 4f64.exp()).ln() + 2f64.ln();
        assert!(
            (scalar(&got) - want).abs() < 1e-9,
            "{} vs {want}",
            scalar(&got)
        );
        // far negative, coincident positives: both terms log(1 + e^(0 - 100 + 1)) ~ 0, no overflow
        let far = dual_triplet(
            &vec(&[0.0]),
            [&vec(&[0.0]), &vec(&[0.0])],
            &vec(&[100.0]),
            MARGIN,
        )?;
        assert!(scalar(&far) < 1e-40 && scalar(&far) >= 0.0);
        Ok(())
    }

    #[test]
    fn temporal_consistency_by_hand() -> Result<()> {
        // frames (1,0), (1,0), (0,1), (-1,0): 1 - cos = 0, 1, 1 -> mean 2/3
        let f = Tensor::new(
            &[[1.0f64, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]],
            &Device::Cpu,
        )?;
        assert!((scalar(&temporal_consistency(&f)?) - 2.0 / 3.0).abs() < 1e-9);
        // scale does not matter, rank-4 frames are flattened: (2,2) vs (1,1) -> 0
        let g = Tensor::new(&[2.0f64, 2.0, 1.0, 1.0], &Device::Cpu)?.reshape((2, 1, 1, 2))?;
        assert!(scalar(&temporal_consistency(&g)?).abs() < 1e-9);
        Ok(())
    }

    #[test]
    fn correction_loss_by_hand() -> Result<()> {
        // four pixels; the last is ignored (its huge error must not count)
        let refined = vec(&[0.9, 0.2, 0.5, 0.0]);
        let detector = vec(&[0.6, 0.1, 0.7, 1.0]);
        let target = vec(&[1.0, 0.0, 0.0, 1.0]);
        let valid = vec(&[1.0, 1.0, 1.0, 0.0]);
        let got = correction(&refined, &detector, &target, &valid)?;
        let bce = -(0.9f64.ln() + 0.8f64.ln() + 0.5f64.ln()) / 3.0;
        // e_det = 0.4, 0.1, 0.7; e_ref = 0.1, 0.2, 0.5; relu(e_ref - e_det) = 0, 0.1, 0
        let improve = 0.1 / 3.0;
        // correct pixels (e_det < 0.5): the first two -> (0 + 0.1) / 2
        let degrade = 0.1 / 2.0;
        for (name, t, want) in [
            ("bce", &got.bce, bce),
            ("improve", &got.improve, improve),
            ("degrade", &got.degrade, degrade),
            ("total", &got.total, bce + 0.5 * improve + degrade),
        ] {
            assert!(
                (scalar(t) - want).abs() < 1e-9,
                "{name}: {} vs {want}",
                scalar(t)
            );
        }
        Ok(())
    }

    #[test]
    fn correction_loss_without_correct_pixels_and_bad_shapes() -> Result<()> {
        // every detector pixel is wrong: L_degrade has no pixels and is 0, not NaN
        let got = correction(
            &vec(&[0.5, 0.5]),
            &vec(&[1.0, 0.0]),
            &vec(&[0.0, 1.0]),
            &vec(&[1.0, 1.0]),
        )?;
        assert_eq!(scalar(&got.degrade), 0.0);
        assert!(scalar(&got.total).is_finite());
        // a refined map at exactly 0 or 1 keeps the BCE finite
        let got = correction(
            &vec(&[0.0, 1.0]),
            &vec(&[0.0, 1.0]),
            &vec(&[1.0, 0.0]),
            &vec(&[1.0, 1.0]),
        )?;
        assert!(scalar(&got.bce).is_finite());
        assert!(correction(&vec(&[0.5]), &vec(&[0.5, 0.5]), &vec(&[1.0]), &vec(&[1.0])).is_err());
        Ok(())
    }

    #[test]
    fn temporal_weight_ramps_then_holds() {
        assert_eq!(temporal_weight(0.0, 2.0), 0.0);
        assert!((temporal_weight(1.0, 2.0) - 0.15).abs() < 1e-12);
        assert!((temporal_weight(5.0, 2.0) - LAMBDA_TEMPORAL).abs() < 1e-12);
        assert_eq!(temporal_weight(0.0, 0.0), LAMBDA_TEMPORAL);
    }
}
