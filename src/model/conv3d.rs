//! 3D convolution and 3D batch normalisation for `(B, C, T, H, W)` tensors, which candle lacks.
//!
//! A Conv3d with kernel `(kt, kh, kw)` is the sum over its `kt` time taps of a Conv2d applied to
//! the time-shifted slices (time folded into the batch), so forward and backward both reuse
//! candle's Conv2d. Stride 1 only (STARS needs no other). Weight layout `(out, in, kt, kh, kw)`
//! and key names (`weight`, `bias`) follow PyTorch's `nn.Conv3d`.
use candle_core::{bail, Result, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, Init, Module, ModuleT, VarBuilder};

/// Shape of a [`Conv3d`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3dConfig {
    /// Kernel `(kt, kh, kw)`.
    pub kernel: (usize, usize, usize),
    /// Zero padding `(pt, ph, pw)` on both sides of each axis.
    pub padding: (usize, usize, usize),
}

impl Conv3dConfig {
    /// A cubic kernel `k` with "same" padding `k / 2` on every axis.
    pub fn same(k: usize) -> Self {
        Self {
            kernel: (k, k, k),
            padding: (k / 2, k / 2, k / 2),
        }
    }
}

/// 3D convolution, stride 1, built from Conv2d over time taps.
#[derive(Clone, Debug)]
pub struct Conv3d {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: Conv3dConfig,
}

impl Conv3d {
    /// Wraps a weight `(out, in, kt, kh, kw)` and an optional bias `(out,)`.
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>, cfg: Conv3dConfig) -> Result<Self> {
        let (_, _, kt, kh, kw) = weight.dims5()?;
        if (kt, kh, kw) != cfg.kernel {
            bail!(
                "conv3d weight kernel {kt}x{kh}x{kw} does not match the config {:?}",
                cfg.kernel
            )
        }
        Ok(Self { weight, bias, cfg })
    }

    /// The kernel weight `(out, in, kt, kh, kw)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

/// A Conv3d with bias, initialised as candle's `conv2d` (Kaiming normal weight, uniform bias).
pub fn conv3d(in_c: usize, out_c: usize, cfg: Conv3dConfig, vb: VarBuilder) -> Result<Conv3d> {
    let (kt, kh, kw) = cfg.kernel;
    let fan_in = (in_c * kt * kh * kw) as f64;
    let bound = 1.0 / fan_in.sqrt();
    let weight = vb.get_with_hints(
        (out_c, in_c, kt, kh, kw),
        "weight",
        candle_nn::init::DEFAULT_KAIMING_NORMAL,
    )?;
    let bias = vb.get_with_hints(
        out_c,
        "bias",
        Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )?;
    Conv3d::from_weights(weight, Some(bias), cfg)
}

/// A Conv3d without bias (before a BatchNorm, which would cancel it and leave it no gradient).
pub fn conv3d_no_bias(
    in_c: usize,
    out_c: usize,
    cfg: Conv3dConfig,
    vb: VarBuilder,
) -> Result<Conv3d> {
    let (kt, kh, kw) = cfg.kernel;
    let weight = vb.get_with_hints(
        (out_c, in_c, kt, kh, kw),
        "weight",
        candle_nn::init::DEFAULT_KAIMING_NORMAL,
    )?;
    Conv3d::from_weights(weight, None, cfg)
}

impl Module for Conv3d {
    /// `(B, C, T, H, W)` -> `(B, O, T', H', W')` with `T' = T + 2 pt - kt + 1` (same for H, W).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        let (out_c, in_c, kt, kh, kw) = self.weight.dims5()?;
        if c != in_c {
            bail!("conv3d input has {c} channels, the kernel expects {in_c}")
        }
        let (pt, ph, pw) = self.cfg.padding;
        let (tp, hp, wp) = (t + 2 * pt, h + 2 * ph, w + 2 * pw);
        if tp < kt || hp < kh || wp < kw {
            bail!(
                "conv3d input {t}x{h}x{w} (padded {tp}x{hp}x{wp}) is smaller than the kernel {kt}x{kh}x{kw}"
            )
        }
        let t_out = tp - kt + 1;
        // time-major (B, T, C, H, W), zero-padded on every axis once
        let x = x.permute((0, 2, 1, 3, 4))?;
        let x = x
            .pad_with_zeros(1, pt, pt)?
            .pad_with_zeros(3, ph, ph)?
            .pad_with_zeros(4, pw, pw)?;
        let mut sum: Option<Tensor> = None;
        for k in 0..kt {
            // the frames tap k sees for every output time, folded into the batch
            let slice = x
                .narrow(1, k, t_out)?
                .contiguous()?
                .reshape((b * t_out, c, hp, wp))?;
            let w_k = self.weight.narrow(2, k, 1)?.squeeze(2)?.contiguous()?;
            let y = slice.conv2d(&w_k, 0, 1, 1, 1)?;
            sum = Some(match sum {
                None => y,
                Some(s) => (s + y)?,
            });
        }
        let y =
            sum.ok_or_else(|| candle_core::Error::Msg("conv3d kernel has no time taps".into()))?;
        let (_, _, h_out, w_out) = y.dims4()?;
        let y = y
            .reshape((b, t_out, out_c, h_out, w_out))?
            .permute((0, 2, 1, 3, 4))?;
        match &self.bias {
            None => Ok(y),
            Some(bias) => y.broadcast_add(&bias.reshape((1, out_c, 1, 1, 1))?),
        }
    }
}

/// Batch normalisation of `(B, C, T, H, W)`: statistics per channel over B, T, H and W in train
/// mode, running statistics (kept in the VarMap, PyTorch's momentum 0.1) in eval mode.
#[derive(Clone, Debug)]
pub struct BatchNorm3d {
    inner: BatchNorm,
}

/// A [`BatchNorm3d`] with PyTorch's defaults (eps 1e-5, affine, momentum 0.1).
pub fn batch_norm3d(channels: usize, vb: VarBuilder) -> Result<BatchNorm3d> {
    Ok(BatchNorm3d {
        inner: candle_nn::batch_norm(channels, BatchNormConfig::default(), vb)?,
    })
}

impl ModuleT for BatchNorm3d {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if x.rank() != 5 {
            bail!("batch-norm 3d expects (B, C, T, H, W), got {:?}", x.dims())
        }
        // candle's BatchNorm reduces over every axis but 1, which is exactly BatchNorm3d
        self.inner.forward_t(x, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;
    use rand::{Rng, SeedableRng};

    fn random(shape: &[usize], seed: u64) -> Vec<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..shape.iter().product::<usize>())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect()
    }

    /// Direct nested-loop Conv3d (stride 1, zero padding), `x` `(B, C, T, H, W)` row-major.
    #[allow(clippy::too_many_arguments)]
    fn naive_conv3d(
        x: &[f64],
        xs: [usize; 5],
        w: &[f64],
        ws: [usize; 5],
        bias: &[f64],
        pad: (usize, usize, usize),
    ) -> (Vec<f64>, [usize; 5]) {
        let [b, c, t, h, wd] = xs;
        let [o, _, kt, kh, kw] = ws;
        let (pt, ph, pw) = pad;
        let (to, ho, wo) = (
            t + 2 * pt - kt + 1,
            h + 2 * ph - kh + 1,
            wd + 2 * pw - kw + 1,
        );
        let mut y = vec![0.0; b * o * to * ho * wo];
        let xi = |bi, ci, ti, hi, wi| (((bi * c + ci) * t + ti) * h + hi) * wd + wi;
        let wi_ = |oi, ci, a, p, q| (((oi * c + ci) * kt + a) * kh + p) * kw + q;
        for bi in 0..b {
            for oi in 0..o {
                for ti in 0..to {
                    for hi in 0..ho {
                        for wj in 0..wo {
                            let mut s = bias[oi];
                            for ci in 0..c {
                                for a in 0..kt {
                                    for p in 0..kh {
                                        for q in 0..kw {
                                            let (tt, hh, ww) = (
                                                (ti + a) as isize - pt as isize,
                                                (hi + p) as isize - ph as isize,
                                                (wj + q) as isize - pw as isize,
                                            );
                                            if tt < 0
                                                || hh < 0
                                                || ww < 0
                                                || tt >= t as isize
                                                || hh >= h as isize
                                                || ww >= wd as isize
                                            {
                                                continue;
                                            }
                                            s += x
                                                [xi(bi, ci, tt as usize, hh as usize, ww as usize)]
                                                * w[wi_(oi, ci, a, p, q)];
                                        }
                                    }
                                }
                            }
                            y[(((bi * o + oi) * to + ti) * ho + hi) * wo + wj] = s;
                        }
                    }
                }
            }
        }
        (y, [b, o, to, ho, wo])
    }

    fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    fn case(xs: [usize; 5], ws: [usize; 5], pad: (usize, usize, usize)) -> Result<()> {
        let dev = Device::Cpu;
        let (x, w, bias) = (random(&xs, 1), random(&ws, 2), random(&[ws[0]], 3));
        let (want, want_shape) = naive_conv3d(&x, xs, &w, ws, &bias, pad);
        let xt = Var::from_vec(x.clone(), &xs, &dev)?;
        let wt = Var::from_vec(w.clone(), &ws, &dev)?;
        let bt = Var::from_vec(bias.clone(), ws[0], &dev)?;
        let cfg = Conv3dConfig {
            kernel: (ws[2], ws[3], ws[4]),
            padding: pad,
        };
        let conv = Conv3d::from_weights(wt.as_tensor().clone(), Some(bt.as_tensor().clone()), cfg)?;
        let y = conv.forward(xt.as_tensor())?;
        assert_eq!(y.dims(), want_shape);
        let got: Vec<f64> = y.flatten_all()?.to_vec1()?;
        assert!(max_diff(&got, &want) < 1e-10, "forward differs");

        // gradients of L = sum(y * r) against the naive loop: dL/dx_i = sum_j r_j dy_j/dx_i,
        // where y is linear in x (and in w), so dy/dx_i is the naive conv of a one-hot input
        let r = random(&want_shape, 4);
        let loss = (y * Tensor::from_vec(r.clone(), &want_shape, &dev)?)?.sum_all()?;
        let grads = loss.backward()?;
        let dot = |y: &[f64]| y.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>();
        let zero_bias = vec![0.0; ws[0]];
        let gx: Vec<f64> = grads.get(&xt).expect("x grad").flatten_all()?.to_vec1()?;
        for i in 0..x.len() {
            let mut e = vec![0.0; x.len()];
            e[i] = 1.0;
            let want = dot(&naive_conv3d(&e, xs, &w, ws, &zero_bias, pad).0);
            assert!((gx[i] - want).abs() < 1e-9, "dx[{i}] {} vs {want}", gx[i]);
        }
        let gw: Vec<f64> = grads.get(&wt).expect("w grad").flatten_all()?.to_vec1()?;
        for i in 0..w.len() {
            let mut e = vec![0.0; w.len()];
            e[i] = 1.0;
            let want = dot(&naive_conv3d(&x, xs, &e, ws, &zero_bias, pad).0);
            assert!((gw[i] - want).abs() < 1e-9, "dw[{i}] {} vs {want}", gw[i]);
        }
        let gb: Vec<f64> = grads.get(&bt).expect("b grad").to_vec1()?;
        for (o, g) in gb.iter().enumerate() {
            let mut e = vec![0.0; ws[0]];
            e[o] = 1.0;
            let want = dot(&naive_conv3d(&x, xs, &vec![0.0; w.len()], ws, &e, pad).0);
            assert!((g - want).abs() < 1e-9, "db[{o}] {g} vs {want}");
        }
        Ok(())
    }

    #[test]
    fn conv3d_cubic_same_padding_matches_naive_loop() -> Result<()> {
        case([2, 3, 3, 4, 5], [2, 3, 3, 3, 3], (1, 1, 1))
    }

    #[test]
    fn conv3d_odd_uneven_kernel_and_padding_matches_naive_loop() -> Result<()> {
        // kernel 3x1x5 with padding (0, 0, 2); and the (3, 1, 1) aggregation to one frame
        case([1, 2, 4, 3, 6], [3, 2, 3, 1, 5], (0, 0, 2))?;
        case([2, 4, 3, 3, 3], [2, 4, 3, 1, 1], (0, 0, 0))
    }

    #[test]
    fn conv3d_rejects_wrong_channels_and_small_input() -> Result<()> {
        let dev = Device::Cpu;
        let conv = Conv3d::from_weights(
            Tensor::zeros((2, 3, 3, 3, 3), DType::F32, &dev)?,
            None,
            Conv3dConfig::same(3),
        )?;
        let err = conv
            .forward(&Tensor::zeros((1, 4, 3, 4, 4), DType::F32, &dev)?)
            .unwrap_err();
        assert!(err.to_string().contains("4 channels"), "{err}");
        let agg = Conv3d::from_weights(
            Tensor::zeros((2, 3, 3, 1, 1), DType::F32, &dev)?,
            None,
            Conv3dConfig {
                kernel: (3, 1, 1),
                padding: (0, 0, 0),
            },
        )?;
        let err = agg
            .forward(&Tensor::zeros((1, 3, 2, 4, 4), DType::F32, &dev)?)
            .unwrap_err();
        assert!(err.to_string().contains("smaller than the kernel"), "{err}");
        Ok(())
    }

    #[test]
    fn batch_norm3d_train_and_eval_match_direct_formula() -> Result<()> {
        let dev = Device::Cpu;
        let dims = [2usize, 3, 3, 2, 4];
        let x = random(&dims, 7);
        let vars = VarMap::new();
        let bn = batch_norm3d(3, VarBuilder::from_varmap(&vars, DType::F64, &dev))?;
        let xt = Var::from_vec(x.clone(), &dims, &dev)?;
        let y: Vec<f64> = bn
            .forward_t(xt.as_tensor(), true)?
            .flatten_all()?
            .to_vec1()?;
        let per = dims[2] * dims[3] * dims[4];
        let n = (dims[0] * per) as f64;
        let at = |b: usize, c: usize, i: usize| ((b * 3 + c) * per) + i;
        for c in 0..3 {
            let vals: Vec<f64> = (0..dims[0])
                .flat_map(|b| (0..per).map(move |i| (b, i)))
                .map(|(b, i)| x[at(b, c, i)])
                .collect();
            let mean = vals.iter().sum::<f64>() / n;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            for b in 0..dims[0] {
                for i in 0..per {
                    let want = (x[at(b, c, i)] - mean) / (var + 1e-5).sqrt();
                    assert!((y[at(b, c, i)] - want).abs() < 1e-9);
                }
            }
            // running stats after one step from (0, 1): momentum 0.1, unbiased variance
            let data = vars.data().lock().unwrap();
            let rm: Vec<f64> = data["running_mean"].to_vec1()?;
            let rv: Vec<f64> = data["running_var"].to_vec1()?;
            assert!((rm[c] - 0.1 * mean).abs() < 1e-9);
            assert!((rv[c] - (0.9 + 0.1 * var * n / (n - 1.0))).abs() < 1e-9);
        }
        // eval mode uses the running statistics, not the batch's
        let e: Vec<f64> = bn
            .forward_t(xt.as_tensor(), false)?
            .flatten_all()?
            .to_vec1()?;
        let data = vars.data().lock().unwrap();
        let rm: Vec<f64> = data["running_mean"].to_vec1()?;
        let rv: Vec<f64> = data["running_var"].to_vec1()?;
        for b in 0..dims[0] {
            for c in 0..3 {
                for i in 0..per {
                    let want = (x[at(b, c, i)] - rm[c]) / (rv[c] + 1e-5).sqrt();
                    assert!((e[at(b, c, i)] - want).abs() < 1e-9);
                }
            }
        }
        drop(data);
        // train mode is differentiable: the gradient of sum(y * r) reaches x and the affine
        let r = Tensor::from_vec(random(&dims, 8), &dims, &dev)?;
        let grads = (bn.forward_t(xt.as_tensor(), true)? * r)?
            .sum_all()?
            .backward()?;
        assert!(grads.get(&xt).is_some());
        let data = vars.data().lock().unwrap();
        assert!(grads.get(data["weight"].as_tensor()).is_some());
        assert!(grads.get(data["bias"].as_tensor()).is_some());
        assert!(bn
            .forward_t(&Tensor::zeros((2, 3, 4), DType::F64, &dev)?, true)
            .is_err());
        Ok(())
    }
}
