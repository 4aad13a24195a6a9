//! FlowCLAS losses (spec §4): masked likelihood and supervised contrastive.
use candle_core::{bail, Result, Tensor};

/// Weight of the likelihood loss in the total.
pub const NLL_WEIGHT: f64 = 1e-6;
/// Temperature of the contrastive loss.
pub const TAU: f64 = 0.1;
/// Most pixels sampled per group for the contrastive loss.
pub const MAX_CONTRAST_PIXELS: usize = 512;

/// L_nll = -mean_b [ sum_valid log p + logdet_b * n_valid / n_pix ] with logdet_b the image's
/// total log-det. `log_p`, `logdet` and `valid` (0/1) are `(B, H, W)`.
pub fn nll(log_p: &Tensor, logdet: &Tensor, valid: &Tensor) -> Result<Tensor> {
    let (b, h, w) = log_p.dims3()?;
    if logdet.dims() != log_p.dims() || valid.dims() != log_p.dims() {
        bail!(
            "nll: log_p {:?}, logdet {:?} and valid {:?} must have one shape",
            log_p.dims(),
            logdet.dims(),
            valid.dims()
        )
    }
    let n_valid = valid.flatten_from(1)?.sum(1)?; // (B,)
    let data = (log_p * valid)?.flatten_from(1)?.sum(1)?;
    let jac = (logdet.flatten_from(1)?.sum(1)? * n_valid)? / (h * w) as f64;
    (data + jac?)?.sum_all()? / -(b as f64)
}

/// Supervised contrastive loss over L2-normalised embeddings.
///
/// `anchors` (A, D) are the first A rows of `contrast` (K, D); anchor i is contrast row i and is
/// never its own positive. For anchor i and positive j (same label, j != i):
/// l_ij = s_ij - log(exp(s_ij) + sum_{k: label_k != label_i} exp(s_ik)), s = cos / tau;
/// L = -mean_i mean_j l_ij over anchors that have a positive. Returns 0 for no anchors.
pub fn contrastive(contrast: &Tensor, labels: &[u8], n_anchors: usize, tau: f64) -> Result<Tensor> {
    let (k, _) = contrast.dims2()?;
    if labels.len() != k || n_anchors > k {
        bail!(
            "contrastive: {k} embeddings, {} labels, {n_anchors} anchors",
            labels.len()
        )
    }
    if n_anchors == 0 {
        return Tensor::zeros((), contrast.dtype(), contrast.device());
    }
    let anchors = contrast.narrow(0, 0, n_anchors)?;
    let s = (anchors.matmul(&contrast.t()?)? / tau)?; // (A, K)
    let mut pos = vec![0f32; n_anchors * k];
    let mut neg = vec![0f32; n_anchors * k];
    for i in 0..n_anchors {
        for j in 0..k {
            if labels[j] != labels[i] {
                neg[i * k + j] = 1.0;
            } else if j != i {
                pos[i * k + j] = 1.0;
            }
        }
    }
    let dev = contrast.device();
    let pos = Tensor::from_vec(pos, (n_anchors, k), dev)?;
    let neg = Tensor::from_vec(neg, (n_anchors, k), dev)?;
    let exp_s = s.exp()?;
    let neg_sum = (&exp_s * &neg)?.sum_keepdim(1)?; // (A, 1)
    let l = (&s - exp_s.broadcast_add(&neg_sum)?.log()?)?;
    let n_pos = pos.sum(1)?;
    let has_pos: Vec<f32> = n_pos.to_vec1()?;
    let counted = has_pos.iter().filter(|&&n| n > 0.0).count();
    if counted == 0 {
        return Tensor::zeros((), contrast.dtype(), contrast.device());
    }
    let per_anchor = ((l * &pos)?.sum(1)? / n_pos.clamp(1f32, f32::MAX)?)?;
    per_anchor.sum_all()? / -(counted as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn nll_matches_hand_computation() -> Result<()> {
        let dev = Device::Cpu;
        // one image 1x2: log p = [-1, -3], logdet = [0.5, 0.25], only pixel 0 valid
        let log_p = Tensor::new(&[[[-1f32, -3.]]], &dev)?;
        let logdet = Tensor::new(&[[[0.5f32, 0.25]]], &dev)?;
        let valid = Tensor::new(&[[[1f32, 0.]]], &dev)?;
        let v: f32 = nll(&log_p, &logdet, &valid)?.to_scalar()?;
        // -( -1 + 0.75 * 1/2 ) = 0.625
        assert!((v - 0.625).abs() < 1e-6, "{v}");
        Ok(())
    }

    #[test]
    fn contrastive_is_zero_without_anchors_and_low_when_separated() -> Result<()> {
        let dev = Device::Cpu;
        let e = Tensor::new(&[[1f32, 0.], [1., 0.], [0., 1.], [0., 1.]], &dev)?;
        assert_eq!(
            contrastive(&e, &[0, 0, 1, 1], 0, TAU)?.to_scalar::<f32>()?,
            0.0
        );
        let separated: f32 = contrastive(&e, &[0, 0, 1, 1], 4, TAU)?.to_scalar()?;
        let mixed: f32 = contrastive(&e, &[0, 1, 0, 1], 4, TAU)?.to_scalar()?;
        assert!(separated < 1e-3 && mixed > 5.0, "{separated} {mixed}");
        Ok(())
    }
}
