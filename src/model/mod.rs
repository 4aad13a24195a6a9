//! candle modules: tensors in, tensors out; weights through `VarBuilder` from safetensors.
pub mod checkpoint_files;
pub mod conv3d;
pub mod dinov2;
pub mod flowclas;
pub mod stars;
pub mod weights;
