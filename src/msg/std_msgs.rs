//! `builtin_interfaces/Time`, `std_msgs/Header`, `std_msgs/Bool`.
use anyhow::{ensure, Result};

use super::{Cdr, CdrReader, CdrWriter, Message, MessageType};

/// `.msg` text of `builtin_interfaces/Time`.
macro_rules! time_msg {
    () => {
        "int32 sec\nuint32 nanosec\n"
    };
}
/// `.msg` text of `std_msgs/Header`.
macro_rules! header_msg {
    () => {
        "builtin_interfaces/Time stamp\nstring frame_id\n"
    };
}
/// `std_msgs/Header` as a dependency section, with its own dependency.
macro_rules! header_dependency {
    () => {
        concat!(
            $crate::msg::msg_separator!(),
            "MSG: std_msgs/Header\n",
            $crate::msg::std_msgs::header_msg!(),
            $crate::msg::msg_separator!(),
            "MSG: builtin_interfaces/Time\n",
            $crate::msg::std_msgs::time_msg!()
        )
    };
}
pub(crate) use {header_dependency, header_msg, time_msg};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// `builtin_interfaces/msg/Time`: seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time {
    /// Whole seconds.
    pub sec: i32,
    /// Nanoseconds within the second, below 1e9.
    pub nanosec: u32,
}

impl Time {
    /// The time `ns` nanoseconds after the epoch (saturating at `i32::MAX` seconds, year 2038).
    pub fn from_nanos(ns: u64) -> Self {
        Self {
            sec: i32::try_from(ns / NANOS_PER_SEC).unwrap_or(i32::MAX),
            nanosec: (ns % NANOS_PER_SEC) as u32,
        }
    }

    /// Nanoseconds since the epoch; `None` before it (negative seconds).
    pub fn to_nanos(self) -> Option<u64> {
        let sec = u64::try_from(self.sec).ok()?;
        Some(sec * NANOS_PER_SEC + u64::from(self.nanosec))
    }
}

impl Cdr for Time {
    fn write(&self, w: &mut CdrWriter) {
        w.i32(self.sec);
        w.u32(self.nanosec);
    }
    fn read(r: &mut CdrReader) -> Result<Self> {
        let sec = r.i32()?;
        let nanosec = r.u32()?;
        ensure!(
            u64::from(nanosec) < NANOS_PER_SEC,
            "time nanosec {nanosec} is not below 1e9"
        );
        Ok(Self { sec, nanosec })
    }
}

/// `std_msgs/msg/Header`: when and in which coordinate frame data was taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// When the data was taken.
    pub stamp: Time,
    /// The coordinate frame (TF) of the data, e.g. `camera`.
    pub frame_id: String,
}

impl Cdr for Header {
    fn write(&self, w: &mut CdrWriter) {
        self.stamp.write(w);
        w.string(&self.frame_id);
    }
    fn read(r: &mut CdrReader) -> Result<Self> {
        Ok(Self {
            stamp: Time::read(r)?,
            frame_id: r.string()?,
        })
    }
}

impl Message for Header {
    const TYPE: MessageType = MessageType {
        name: "std_msgs/msg/Header",
        definition: concat!(
            header_msg!(),
            crate::msg::msg_separator!(),
            "MSG: builtin_interfaces/Time\n",
            time_msg!()
        ),
        hash: "RIHS01_f49fb3ae2cf070f793645ff749683ac6b06203e41c891e17701b1cb597ce6a01",
    };
}

/// `std_msgs/msg/Bool` (the alert node's `/stars/alert/active`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bool {
    /// The value.
    pub data: bool,
}

impl Cdr for Bool {
    fn write(&self, w: &mut CdrWriter) {
        w.bool(self.data);
    }
    fn read(r: &mut CdrReader) -> Result<Self> {
        Ok(Self { data: r.bool()? })
    }
}

impl Message for Bool {
    const TYPE: MessageType = MessageType {
        name: "std_msgs/msg/Bool",
        definition: "bool data\n",
        hash: "RIHS01_feb91e995ff9ebd09c0cb3d2aed18b11077585839fb5db80193b62d74528f6c9",
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_matches_hand_encoding() {
        let h = Header {
            stamp: Time { sec: 5, nanosec: 7 },
            frame_id: "cam".into(),
        };
        let buf = h.encode();
        assert_eq!(
            buf,
            [0, 1, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0, 4, 0, 0, 0, b'c', b'a', b'm', 0]
        );
        assert_eq!(Header::decode(&buf).unwrap(), h);
        let be = [
            0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0, 4, b'c', b'a', b'm', 0,
        ];
        assert_eq!(Header::decode(&be).unwrap(), h);
    }

    #[test]
    fn bool_round_trips() {
        for data in [false, true] {
            assert_eq!(Bool::decode(&Bool { data }.encode()).unwrap().data, data);
        }
    }

    #[test]
    fn time_nanos_round_trip() {
        let t = Time::from_nanos(1_767_225_600_123_456_789);
        assert_eq!(t.nanosec, 123_456_789);
        assert_eq!(t.to_nanos(), Some(1_767_225_600_123_456_789));
        assert_eq!(
            Time {
                sec: -1,
                nanosec: 0
            }
            .to_nanos(),
            None
        );
    }

    #[test]
    fn truncated_header_is_an_error() {
        let buf = Header::default().encode();
        for n in 0..buf.len() {
            assert!(Header::decode(&buf[..n]).is_err(), "prefix {n}");
        }
    }
}
