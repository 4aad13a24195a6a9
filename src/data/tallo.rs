//! Reader for TALLO-layout sequences: `<split>/<sequence_id>/{frames,masks}/NNN.png` + `meta.json`.
//!
//! Real TALLO/ALLO masks use other ids than our synthetic data, so the ids are configuration
//! ([`MaskIds`]), never constants in the code that reads masks.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{GrayImage, RgbImage};

use super::meta::SequenceMeta;

/// Which mask values mean what. Defaults are our synthetic layout (DESIGN.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaskIds {
    /// Pixels of this id are anomalous (positive). Synthetic and STARS paper: 9; newer ALLO loader: 8.
    pub anomaly: u8,
    /// Pixels of this id are dropped from every metric.
    pub ignore: u8,
    /// Training hard negatives (outlier exposure); normal for evaluation.
    pub hard_negative: u8,
}

impl Default for MaskIds {
    fn default() -> Self {
        Self {
            anomaly: 9,
            ignore: 255,
            hard_negative: 10,
        }
    }
}

/// One frame of a sequence: its index (the numeric file stem) and its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub index: u32,
    pub image: PathBuf,
    /// `None` when the sequence has no `masks/` folder or no mask for this frame.
    pub mask: Option<PathBuf>,
}

/// A sequence directory and its frames, sorted by index.
#[derive(Clone, Debug)]
pub struct Sequence {
    /// The directory name, e.g. `cam07_seq003_anomalous`.
    pub id: String,
    pub dir: PathBuf,
    pub frames: Vec<Frame>,
}

impl Sequence {
    /// Opens a sequence directory (one that holds `frames/`).
    pub fn open(dir: &Path) -> Result<Self> {
        let frames_dir = dir.join("frames");
        if !frames_dir.is_dir() {
            bail!(
                "{} is not a TALLO sequence (no frames/ folder)",
                dir.display()
            );
        }
        let masks_dir = dir.join("masks");
        let mut frames = Vec::new();
        for (index, image) in numbered_pngs(&frames_dir)? {
            let mask = masks_dir.join(
                image
                    .file_name()
                    .context("a listed frame has no file name")?,
            );
            let mask = mask.is_file().then_some(mask);
            frames.push(Frame { index, image, mask });
        }
        if frames.is_empty() {
            bail!(
                "{} has no frames (expected frames/NNN.png)",
                frames_dir.display()
            );
        }
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        Ok(Self {
            id,
            dir: dir.to_path_buf(),
            frames,
        })
    }

    /// Path of `meta.json` (may not exist for foreign data).
    pub fn meta_path(&self) -> PathBuf {
        self.dir.join("meta.json")
    }

    /// The sequence's `meta.json`, or `None` when it has none.
    pub fn meta(&self) -> Result<Option<SequenceMeta>> {
        let path = self.meta_path();
        if !path.exists() {
            return Ok(None);
        }
        SequenceMeta::load(&path).map(Some)
    }

    /// Decodes frame `i` (position in [`Self::frames`]) as RGB8; grey or RGBA PNGs are converted.
    pub fn load_image(&self, i: usize) -> Result<RgbImage> {
        load_rgb(&self.frames[i].image)
    }

    /// Decodes the mask of frame `i`, checking that it is 8-bit single-channel and has the
    /// frame's size.
    pub fn load_mask(&self, i: usize) -> Result<GrayImage> {
        let frame = &self.frames[i];
        let path = frame
            .mask
            .as_ref()
            .with_context(|| format!("{} has no mask", frame.image.display()))?;
        let mask = load_mask(path)?;
        let (w, h) = image::image_dimensions(&frame.image)
            .with_context(|| format!("reading {}", frame.image.display()))?;
        if mask.dimensions() != (w, h) {
            bail!(
                "{} is {}x{} but its frame is {w}x{h}",
                path.display(),
                mask.width(),
                mask.height()
            );
        }
        Ok(mask)
    }
}

/// Decodes a PNG as RGB8.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let img = image::open(path).with_context(|| format!("decoding {}", path.display()))?;
    if img.width() == 0 || img.height() == 0 {
        bail!("{} is empty (0x0)", path.display());
    }
    Ok(img.to_rgb8())
}

/// Decodes a semantic-id mask; it must be single-channel 8-bit (ids are not colours).
pub fn load_mask(path: &Path) -> Result<GrayImage> {
    let img = image::open(path).with_context(|| format!("decoding {}", path.display()))?;
    match img {
        image::DynamicImage::ImageLuma8(m) => Ok(m),
        other => bail!(
            "{} is {:?}, expected an 8-bit single-channel mask of semantic ids",
            path.display(),
            other.color()
        ),
    }
}

/// Lists the sequences under `path`: `path` itself when it is a sequence, else its
/// subdirectories that are sequences (a split), sorted by name.
pub fn list_sequences(path: &Path) -> Result<Vec<Sequence>> {
    if !path.is_dir() {
        bail!("{} is not a directory", path.display());
    }
    if path.join("frames").is_dir() {
        return Ok(vec![Sequence::open(path)?]);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("listing {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("frames").is_dir())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        bail!(
            "{} holds no TALLO sequences (expected SEQ/frames/NNN.png or SPLIT/SEQ/frames/NNN.png)",
            path.display()
        );
    }
    dirs.iter().map(|d| Sequence::open(d)).collect()
}

/// `NNN.png` files of a folder as (index, path), sorted by index; other files are ignored.
fn numbered_pngs(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"))
        {
            if let Some(index) = path.file_stem().and_then(|s| s.to_str()?.parse().ok()) {
                out.push((index, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_seq(dir: &Path, n: u32, mask_size: (u32, u32)) {
        std::fs::create_dir_all(dir.join("frames")).unwrap();
        std::fs::create_dir_all(dir.join("masks")).unwrap();
        for i in 0..n {
            RgbImage::new(8, 6)
                .save(dir.join(format!("frames/{i:03}.png")))
                .unwrap();
            GrayImage::new(mask_size.0, mask_size.1)
                .save(dir.join(format!("masks/{i:03}.png")))
                .unwrap();
        }
    }

    #[test]
    fn lists_split_sorted_and_frames_by_index() {
        let tmp = tempfile::tempdir().unwrap();
        write_seq(&tmp.path().join("b"), 12, (8, 6));
        write_seq(&tmp.path().join("a"), 2, (8, 6));
        let seqs = list_sequences(tmp.path()).unwrap();
        assert_eq!(
            seqs.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let idx: Vec<u32> = seqs[1].frames.iter().map(|f| f.index).collect();
        assert_eq!(idx, (0..12).collect::<Vec<_>>());
        assert_eq!(seqs[1].load_mask(11).unwrap().dimensions(), (8, 6));
    }

    #[test]
    fn mask_of_wrong_size_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        write_seq(tmp.path(), 1, (7, 6));
        let seq = Sequence::open(tmp.path()).unwrap();
        let err = format!("{:#}", seq.load_mask(0).unwrap_err());
        assert!(err.contains("is 7x6 but its frame is 8x6"), "{err}");
    }

    #[test]
    fn rgb_mask_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("m.png");
        RgbImage::new(2, 2).save(&p).unwrap();
        assert!(format!("{:#}", load_mask(&p).unwrap_err()).contains("single-channel"));
    }

    #[test]
    fn empty_dir_is_not_a_split() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(list_sequences(tmp.path()).is_err());
    }
}
