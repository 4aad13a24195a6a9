//! Data on disk: the TALLO layout (read by everything), `meta.json`, and the synthetic generator.
//!
//! Layout: `<root>/<split>/<sequence_id>/frames/NNN.png` (RGB8), `masks/NNN.png` (uint8
//! semantic ids) and `meta.json`. See DESIGN.md for the ids.
pub mod meta;
pub mod paste;
pub mod synth;
pub mod tallo;

pub use meta::SequenceMeta;
pub use tallo::{Frame, MaskIds, Sequence};
