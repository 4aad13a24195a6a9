//! Which frames of a bag came from which TALLO sequence: `stars bag from-tallo` records a table
//! under `custom_data` key [`SEQUENCES_KEY`] of `metadata.yaml`, a JSON list of
//! `{"id", "start_ns", "period_ns", "frames"}` (sequence directory name, stamp of its first
//! frame, stamp step, original frame indices in stamp order). A frame stamped `t` is frame
//! `frames[(t - start_ns) / period_ns]` of the sequence whose range holds it, so the table stays
//! valid when a bag is cut in time.
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::BagReader;

/// `custom_data` key of the sequence table.
pub const SEQUENCES_KEY: &str = "stars/tallo_sequences";

/// Where one TALLO sequence lies in a bag's timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SequenceSpan {
    /// The sequence directory name.
    pub id: String,
    /// Stamp of its first frame.
    pub start_ns: u64,
    /// Stamp step between frames.
    pub period_ns: u64,
    /// Original frame indices (file stems), in stamp order.
    pub frames: Vec<u32>,
}

impl SequenceSpan {
    /// The frame index stamped `stamp`, if it belongs to this sequence.
    pub fn frame_at(&self, stamp: u64) -> Option<u32> {
        let offset = stamp.checked_sub(self.start_ns)?;
        if offset % self.period_ns.max(1) != 0 {
            return None;
        }
        let k = usize::try_from(offset / self.period_ns.max(1)).ok()?;
        self.frames.get(k).copied()
    }
}

impl BagReader {
    /// The sequence table `from-tallo` stored, if the bag has one.
    pub fn sequence_table(&self) -> Result<Option<Vec<SequenceSpan>>> {
        let Some(text) = self
            .info()
            .custom_data
            .as_ref()
            .and_then(|c| c.get(SEQUENCES_KEY))
        else {
            return Ok(None);
        };
        let spans: Vec<SequenceSpan> = serde_json::from_str(text)
            .with_context(|| format!("parsing custom_data {SEQUENCES_KEY} of metadata.yaml"))?;
        for s in &spans {
            ensure!(
                is_plain_name(&s.id),
                "custom_data {SEQUENCES_KEY}: sequence id {:?} is not a plain directory name",
                s.id
            );
        }
        Ok(Some(spans))
    }
}

/// A single path component: sequence ids from a bag become directory names, and must not
/// point outside the output directory.
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_map_stamps_to_frame_indices() {
        let s = SequenceSpan {
            id: "a".into(),
            start_ns: 100,
            period_ns: 10,
            frames: vec![4, 5, 7],
        };
        assert_eq!(s.frame_at(100), Some(4));
        assert_eq!(s.frame_at(120), Some(7));
        assert_eq!(s.frame_at(130), None);
        assert_eq!(s.frame_at(105), None);
        assert_eq!(s.frame_at(90), None);
    }

    #[test]
    fn sequence_ids_cannot_escape_the_output() {
        assert!(is_plain_name("cam00_seq001"));
        for bad in ["", ".", "..", "../x", "a/b"] {
            assert!(!is_plain_name(bad), "{bad}");
        }
    }
}
