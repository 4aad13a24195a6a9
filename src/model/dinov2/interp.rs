//! Bicubic resizing of the position-embedding table, bit-for-bit in the way PyTorch's
//! `F.interpolate(mode="bicubic", align_corners=False)` computes it on the CPU, for the three
//! calls the DINOv2 references make (see [`PosInterp`]).
//!
//! A 2-D bicubic resize is separable, so each axis becomes an `(out, in)` matrix and the table is
//! resized as `A_h · P · A_wᵀ`. Weights are computed in f32 like PyTorch's float kernels.
use candle_core::{bail, Device, Result, Tensor};

/// How the 37x37 (or other square) position table is resized to the input's patch grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosInterp {
    /// Original DINOv2 (and FlowCLAS): `scale_factor = (grid + 0.1) / M`, and PyTorch maps
    /// output to source coordinates with that scale factor, not with `M / grid`.
    Original,
    /// transformers' `Dinov2Model`: `size = (grid_h, grid_w)`, source scale `M / grid`.
    Transformers,
    /// torch-hub `*_reg` models and transformers' `Dinov2WithRegistersModel`: `size = (grid_h,
    /// grid_w)` with `antialias=True` (PIL-style cubic, a = -0.5, weights renormalised at borders).
    Antialias,
}

impl std::fmt::Display for PosInterp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Original => "original",
            Self::Transformers => "transformers",
            Self::Antialias => "antialias",
        })
    }
}

/// DINOv2's offset on the target grid ("historical kludge", facebookresearch/dino#8).
const ORIGINAL_OFFSET: f64 = 0.1;

/// Keys' cubic convolution kernel for |x| <= 1 (PyTorch `cubic_convolution1`).
fn cubic1(x: f32, a: f32) -> f32 {
    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
}

/// Keys' cubic convolution kernel for 1 < |x| < 2 (PyTorch `cubic_convolution2`).
fn cubic2(x: f32, a: f32) -> f32 {
    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
}

/// Plain bicubic (a = -0.75): four taps around `scale * (i + 0.5) - 0.5`, indices clamped to
/// the border (PyTorch `upsample_bicubic2d`, `guard_index_and_lambda`).
fn cubic_matrix(input: usize, output: usize, scale: f32) -> Vec<f32> {
    const A: f32 = -0.75;
    let last = input as i64 - 1;
    let mut m = vec![0f32; output * input];
    for i in 0..output {
        let real = scale * (i as f32 + 0.5) - 0.5;
        let idx = (real.floor() as i64).min(last);
        let t = (real - idx as f32).clamp(0.0, 1.0);
        let weights = [
            cubic2(t + 1.0, A),
            cubic1(t, A),
            cubic1(1.0 - t, A),
            cubic2(2.0 - t, A),
        ];
        for (k, w) in weights.into_iter().enumerate() {
            let j = (idx - 1 + k as i64).clamp(0, last) as usize;
            m[i * input + j] += w;
        }
    }
    m
}

/// Antialiased bicubic (PyTorch `_upsample_bicubic2d_aa`, from PIL): a = -0.5, support widened by
/// the scale when shrinking, out-of-range taps dropped and the rest renormalised.
fn antialias_matrix(input: usize, output: usize) -> Vec<f32> {
    fn filter(x: f32) -> f32 {
        const A: f32 = -0.5;
        let x = x.abs();
        if x < 1.0 {
            cubic1(x, A)
        } else if x < 2.0 {
            cubic2(x, A)
        } else {
            0.0
        }
    }
    let scale = input as f32 / output as f32;
    let (support, inv_scale) = if scale >= 1.0 {
        (2.0 * scale, 1.0 / scale)
    } else {
        (2.0, 1.0)
    };
    let mut m = vec![0f32; output * input];
    for i in 0..output {
        let center = scale * (i as f32 + 0.5);
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).min(input as i64).max(0) as usize;
        let row = &mut m[i * input..(i + 1) * input];
        for (j, w) in row.iter_mut().enumerate().take(hi).skip(lo) {
            *w = filter((j as f32 - center + 0.5) * inv_scale);
        }
        let total: f32 = row.iter().sum();
        if total != 0.0 {
            row.iter_mut().for_each(|w| *w /= total);
        }
    }
    m
}

/// The `(output, input)` matrix that resizes one axis of the position table from `input` to
/// `output` cells in `mode`.
pub fn resize_matrix(
    mode: PosInterp,
    input: usize,
    output: usize,
    device: &Device,
) -> Result<Tensor> {
    if input == 0 || output == 0 {
        bail!("cannot resize a position table of {input} cells to {output}");
    }
    let m = match mode {
        PosInterp::Original => {
            // Python floats are f64: the scale factor and the output size are computed in f64,
            // and the kernel receives 1 / scale_factor cast to f32.
            let scale_factor = (output as f64 + ORIGINAL_OFFSET) / input as f64;
            let size = (input as f64 * scale_factor).floor() as usize;
            if size != output {
                bail!("scale factor {scale_factor} maps {input} cells to {size}, not {output}");
            }
            cubic_matrix(input, output, (1.0 / scale_factor) as f32)
        }
        PosInterp::Transformers => cubic_matrix(input, output, input as f32 / output as f32),
        PosInterp::Antialias => antialias_matrix(input, output),
    };
    Tensor::from_vec(m, (output, input), device)
}

/// Resizes a `(m, m, C)` position table to `(grid_h, grid_w, C)`; the table is returned as is
/// when the grid already matches (as every reference does).
pub fn resize_table(
    table: &Tensor,
    grid_h: usize,
    grid_w: usize,
    mode: PosInterp,
) -> Result<Tensor> {
    let (m, m2, c) = table.dims3()?;
    if m != m2 {
        bail!("position table is {m}x{m2}, expected a square grid");
    }
    if grid_h == m && grid_w == m {
        return Ok(table.clone());
    }
    let device = table.device();
    let a_h = resize_matrix(mode, m, grid_h, device)?;
    let a_w = resize_matrix(mode, m, grid_w, device)?;
    // rows: (gh, m) x (m, m*C); columns: (gw, m) x (gh, m, C), broadcast over gh
    let rows = a_h
        .matmul(&table.reshape((m, m * c))?)?
        .reshape((grid_h, m, c))?;
    a_w.broadcast_matmul(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_when_sizes_match() {
        for mode in [PosInterp::Transformers, PosInterp::Antialias] {
            let m = resize_matrix(mode, 5, 5, &Device::Cpu).unwrap();
            let eye = Tensor::eye(5, candle_core::DType::F32, &Device::Cpu).unwrap();
            let diff = (m - eye).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-6, "{mode}");
        }
    }

    #[test]
    fn rows_sum_to_one() {
        for mode in [
            PosInterp::Original,
            PosInterp::Transformers,
            PosInterp::Antialias,
        ] {
            for out in [3, 5, 9, 40, 78] {
                let m = resize_matrix(mode, 37, out, &Device::Cpu).unwrap();
                let sums = m.sum(1).unwrap().to_vec1::<f32>().unwrap();
                assert!(
                    sums.iter().all(|s| (s - 1.0).abs() < 1e-5),
                    "{mode} {out}: {sums:?}"
                );
            }
        }
    }
}
