//! candle modules: tensors in, tensors out; weights through `VarBuilder` from safetensors.
pub mod checkpoint_files;
pub mod conv3d;
pub mod dinov2;
pub mod flowclas;
pub mod stars;
pub mod weights;

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// The device a `--device` flag or `device` parameter names: `cpu` or `cuda:N`. Asking for
/// CUDA from a binary built without it (cargo feature `cuda`), or for a GPU the machine does
/// not have, is a one-line error rather than a silent fall-back to the CPU.
pub fn device(spec: &str) -> Result<Device> {
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let Some(ordinal) = spec
        .strip_prefix("cuda:")
        .and_then(|n| n.parse::<usize>().ok())
    else {
        bail!("device `{spec}`: expected `cpu` or `cuda:N` (e.g. cuda:0)");
    };
    if !cfg!(feature = "cuda") {
        bail!("device {spec}: this binary was built without CUDA (rebuild with `--features cuda`)");
    }
    Device::new_cuda(ordinal).with_context(|| format!("device {spec}: no usable CUDA device"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn devices_are_cpu_or_cuda_with_one_line_errors() {
        assert!(super::device("cpu").unwrap().is_cpu());
        for bad in ["gpu", "cuda", "cuda:x", "cuda:-1", ""] {
            let e = format!("{:#}", super::device(bad).unwrap_err());
            assert!(e.contains("expected `cpu` or `cuda:N`"), "{bad}: {e}");
        }
        if !cfg!(feature = "cuda") {
            let e = format!("{:#}", super::device("cuda:0").unwrap_err());
            assert!(e.contains("built without CUDA") && !e.contains('\n'), "{e}");
        }
    }
}
