//! Running a trained detector over TALLO-layout sequences: one anomaly map per frame, written
//! as `.npy` at the mask's relative path so the output mirrors the split for `stars eval`.
use std::path::Path;

use anyhow::{Context, Result};

use crate::data::tallo::list_sequences;
use crate::model::flowclas::{FeatureExtractor, FlowClas};
use crate::progress::Progress;

/// Runs the detector over every frame of `data` (a split or one sequence) and writes each map
/// as `.npy` under `out` (`SEQ/frames/007.png` -> `out/SEQ/masks/007.npy`), one `progress`
/// step per frame; returns the number of maps.
pub fn write_maps(
    model: &FlowClas,
    extractor: &dyn FeatureExtractor,
    data: &Path,
    out: &Path,
    progress: &dyn Progress,
) -> Result<usize> {
    let sequences = list_sequences(data)?;
    let total: usize = sequences.iter().map(|s| s.frames.len()).sum();
    progress.set_length(total as u64);
    for seq in &sequences {
        let rel = seq.dir.strip_prefix(data).unwrap_or(Path::new(&seq.id));
        let dir = out.join(rel).join("masks");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (i, frame) in seq.frames.iter().enumerate() {
            let image = seq.load_image(i)?;
            let embedded = extractor.embed(&image)?;
            let map = model
                .anomaly_map(&embedded.features, embedded.padding)?
                .squeeze(0)?;
            let path = dir.join(format!("{:03}.npy", frame.index));
            map.write_npy(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            progress.inc(1);
        }
    }
    progress.finish();
    Ok(total)
}
