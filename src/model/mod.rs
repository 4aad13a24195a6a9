//! candle modules: tensors in, tensors out; weights through `VarBuilder` from safetensors.
pub mod dinov2;
pub mod flowclas;
pub mod weights;
