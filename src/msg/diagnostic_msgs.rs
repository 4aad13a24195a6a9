//! `diagnostic_msgs/DiagnosticArray` (the alert node's `/stars/alert/status`).
use anyhow::Result;

use super::std_msgs::{header_dependency, Header};
use super::{Cdr, CdrReader, CdrWriter, Message, MessageType};

/// Smallest CDR size of a `KeyValue` (two empty strings), to bound sequence counts.
const MIN_KEY_VALUE_BYTES: usize = 10;
/// Smallest CDR size of a `DiagnosticStatus` (level, three empty strings, empty values).
const MIN_STATUS_BYTES: usize = 20;

/// `diagnostic_msgs/msg/KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// What the value is, e.g. `score`.
    pub key: String,
    /// The value as text.
    pub value: String,
}

impl Cdr for KeyValue {
    fn write(&self, w: &mut CdrWriter) {
        w.string(&self.key);
        w.string(&self.value);
    }
    fn read(r: &mut CdrReader) -> Result<Self> {
        Ok(Self {
            key: r.string()?,
            value: r.string()?,
        })
    }
}

/// `diagnostic_msgs/msg/DiagnosticStatus`: the state of one component.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiagnosticStatus {
    /// One of [`Self::OK`], [`Self::WARN`], [`Self::ERROR`], [`Self::STALE`].
    pub level: u8,
    /// Component name, e.g. `stars/alert`.
    pub name: String,
    /// Human-readable state.
    pub message: String,
    /// Hardware the component watches.
    pub hardware_id: String,
    /// Named values (score, threshold, area, bbox, ...).
    pub values: Vec<KeyValue>,
}

impl DiagnosticStatus {
    /// Level: all good.
    pub const OK: u8 = 0;
    /// Level: warning.
    pub const WARN: u8 = 1;
    /// Level: error.
    pub const ERROR: u8 = 2;
    /// Level: no recent data.
    pub const STALE: u8 = 3;
}

impl Cdr for DiagnosticStatus {
    fn write(&self, w: &mut CdrWriter) {
        w.u8(self.level);
        w.string(&self.name);
        w.string(&self.message);
        w.string(&self.hardware_id);
        w.sequence_len(self.values.len());
        self.values.iter().for_each(|v| v.write(w));
    }
    fn read(r: &mut CdrReader) -> Result<Self> {
        let level = r.u8()?;
        let name = r.string()?;
        let message = r.string()?;
        let hardware_id = r.string()?;
        let n = r.sequence_len(MIN_KEY_VALUE_BYTES)?;
        let values = (0..n).map(|_| KeyValue::read(r)).collect::<Result<_>>()?;
        Ok(Self {
            level,
            name,
            message,
            hardware_id,
            values,
        })
    }
}

/// `diagnostic_msgs/msg/DiagnosticArray`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiagnosticArray {
    /// Time and frame of the report.
    pub header: Header,
    /// One entry per component.
    pub status: Vec<DiagnosticStatus>,
}

impl Cdr for DiagnosticArray {
    fn write(&self, w: &mut CdrWriter) {
        self.header.write(w);
        w.sequence_len(self.status.len());
        self.status.iter().for_each(|s| s.write(w));
    }
    fn read(r: &mut CdrReader) -> Result<Self> {
        let header = Header::read(r)?;
        let n = r.sequence_len(MIN_STATUS_BYTES)?;
        let status = (0..n)
            .map(|_| DiagnosticStatus::read(r))
            .collect::<Result<_>>()?;
        Ok(Self { header, status })
    }
}

impl Message for DiagnosticArray {
    const TYPE: MessageType = MessageType {
        name: "diagnostic_msgs/msg/DiagnosticArray",
        definition: concat!(
            "std_msgs/Header header\ndiagnostic_msgs/DiagnosticStatus[] status\n",
            header_dependency!(),
            crate::msg::msg_separator!(),
            "MSG: diagnostic_msgs/DiagnosticStatus\n",
            "byte OK=0\nbyte WARN=1\nbyte ERROR=2\nbyte STALE=3\nbyte level\nstring name\n",
            "string message\nstring hardware_id\ndiagnostic_msgs/KeyValue[] values\n",
            crate::msg::msg_separator!(),
            "MSG: diagnostic_msgs/KeyValue\n",
            "string key\nstring value\n"
        ),
        hash: "RIHS01_5a8a36efb05fb25070fa0fb3810290c0e6cd4862b54a8fb975a1ee8dc55a333e",
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Time;

    /// An alert status as the alert node will publish it.
    pub(crate) fn sample() -> DiagnosticArray {
        DiagnosticArray {
            header: Header {
                stamp: Time {
                    sec: 10,
                    nanosec: 500,
                },
                frame_id: "camera".into(),
            },
            status: vec![
                DiagnosticStatus {
                    level: DiagnosticStatus::WARN,
                    name: "stars/alert".into(),
                    message: "anomaly".into(),
                    hardware_id: "cam0".into(),
                    values: vec![
                        KeyValue {
                            key: "score".into(),
                            value: "0.93".into(),
                        },
                        KeyValue {
                            key: "bbox".into(),
                            value: "1 2 3 4".into(),
                        },
                    ],
                },
                DiagnosticStatus::default(),
            ],
        }
    }

    #[test]
    fn round_trips_and_rejects_truncation() {
        let msg = sample();
        let buf = msg.encode();
        assert_eq!(DiagnosticArray::decode(&buf).unwrap(), msg);
        for n in 0..buf.len() {
            assert!(DiagnosticArray::decode(&buf[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn huge_counts_are_errors_not_allocations() {
        let mut buf = DiagnosticArray::default().encode();
        let n = buf.len();
        buf[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(DiagnosticArray::decode(&buf).is_err());
    }
}
