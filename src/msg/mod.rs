//! ROS 2 messages as plain Rust structs with their CDR (XCDR1) encoding, without ROS.
//!
//! Each message type knows its ROS type name, its `ros2msg` schema text (the `.msg` definition
//! followed by its dependencies, each after a line of 80 `=` and `MSG: pkg/Name`, the way rosbag2
//! stores schemas in MCAP) and its RIHS01 type hash, so [`crate::bag`] can write self-describing
//! bags. Decoding validates: truncated buffers, unknown image encodings, inconsistent sizes and
//! sizes above [`sensor_msgs::MAX_IMAGE_BYTES`] are errors, never panics or huge allocations.
pub mod cdr;
pub mod diagnostic_msgs;
pub mod sensor_msgs;
pub mod std_msgs;

use anyhow::{Context, Result};

pub use cdr::{CdrReader, CdrWriter};
pub use diagnostic_msgs::{DiagnosticArray, DiagnosticStatus, KeyValue};
pub use sensor_msgs::{Encoding, Image, ImageRef};
pub use std_msgs::{Bool, Header, Time};

/// A ROS 2 message type as a bag records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageType {
    /// Full ROS 2 name, e.g. `sensor_msgs/msg/Image`.
    pub name: &'static str,
    /// `ros2msg` schema text: the definition, then each dependency after a separator.
    pub definition: &'static str,
    /// RIHS01 type description hash (what Jazzy's rosbag2 records as `type_description_hash`).
    pub hash: &'static str,
}

/// A struct with a CDR body (messages and the structs nested in them).
pub trait Cdr: Sized {
    /// Appends the body (no encapsulation header).
    fn write(&self, w: &mut CdrWriter);
    /// Reads the body (after the encapsulation header).
    fn read(r: &mut CdrReader) -> Result<Self>;
}

/// A top-level message: a [`Cdr`] struct with a ROS type.
pub trait Message: Cdr {
    /// The ROS type this struct encodes.
    const TYPE: MessageType;

    /// Body size estimate so encoding allocates once.
    fn size_hint(&self) -> usize {
        64
    }

    /// Appends the full CDR buffer (encapsulation header + body) to `out`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = CdrWriter::new(out, self.size_hint());
        self.write(&mut w);
    }

    /// The full CDR buffer.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Decodes and validates a full CDR buffer of either byte order.
    fn decode(buf: &[u8]) -> Result<Self> {
        let mut r = CdrReader::new(buf)?;
        Self::read(&mut r).with_context(|| format!("decoding {}", Self::TYPE.name))
    }
}

/// Separator between a definition and each of its dependencies in a `ros2msg` schema.
macro_rules! msg_separator {
    () => {
        "================================================================================\n"
    };
}
pub(crate) use msg_separator;
