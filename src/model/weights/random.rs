//! Deterministic random weights for placeholder runs (`--random-weights`).
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::Init;

/// Deterministic random tensors for [`random_dinov2`]: each tensor's values depend only on the
/// seed and its name, so they do not change with build order.
pub(super) struct RandomBackend {
    seed: u64,
}

/// splitmix64: tiny, good enough for placeholder weights, and reproducible everywhere.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl RandomBackend {
    pub(super) fn new(seed: u64) -> Self {
        Self { seed }
    }

    fn values(&self, shape: &Shape, name: &str, init: Init) -> Vec<f32> {
        let mut state = name
            .bytes()
            .fold(self.seed ^ 0xCBF2_9CE4_8422_2325, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01B3)
            });
        let mut uniform = move || (splitmix(&mut state) >> 40) as f32 / (1u64 << 24) as f32;
        let fan_in: usize = shape.dims().iter().skip(1).product::<usize>().max(1);
        let n = shape.elem_count();
        match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Uniform { lo, up } => (0..n)
                .map(|_| lo as f32 + (up - lo) as f32 * uniform())
                .collect(),
            other => {
                let (mean, stdev) = match other {
                    Init::Randn { mean, stdev } => (mean as f32, stdev as f32),
                    _ => (0.0, (2.0 / fan_in as f32).sqrt()),
                };
                // Box-Muller
                (0..n)
                    .map(|_| {
                        let (u1, u2) = (uniform().max(1e-7), uniform());
                        let z = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
                        mean + stdev * z
                    })
                    .collect()
            }
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for RandomBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        Tensor::from_vec(self.values(&s, name, h), s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}
