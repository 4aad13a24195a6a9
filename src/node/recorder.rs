//! The recorder: a graph stage that writes every topic it subscribes to into an output bag, as
//! `ros2 bag record` would. `stars run` records its outputs with it; the soak benchmark too.
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use super::{stamp_ns, topics, Msg, Node, Publication};
use crate::bag::{BagWriter, Qos};
use crate::msg::{Bool, DiagnosticArray, Image, Message, MessageType};

/// The recorder's stage name in reports.
pub const NAME: &str = "recorder";
/// Queue depth of the recorder (it only copies bytes to the file, so it keeps up).
pub const QUEUE_DEPTH: usize = 32;

/// The topics a run outputs (and records) with their types and QoS, in the contract's order;
/// `gt` adds the ground-truth masks of bags made from TALLO-layout data.
pub fn output_topics(gt: bool) -> Vec<(&'static str, MessageType, Qos)> {
    let mut out = vec![(topics::CAMERA, Image::TYPE, Qos::sensor_data())];
    if gt {
        out.push((topics::GT_MASK, Image::TYPE, Qos::sensor_data()));
    }
    out.extend([
        (topics::FEATURES, Image::TYPE, Qos::reliable()),
        (topics::DETECTOR_MAP, Image::TYPE, Qos::reliable()),
        (topics::REFINED_MAP, Image::TYPE, Qos::reliable()),
        (topics::REFINED_OVERLAY, Image::TYPE, Qos::reliable()),
        (topics::ALERT_ACTIVE, Bool::TYPE, Qos::latched()),
        (topics::ALERT_STATUS, DiagnosticArray::TYPE, Qos::reliable()),
        (topics::DIAGNOSTICS, DiagnosticArray::TYPE, Qos::reliable()),
    ]);
    out
}

/// Writes every message of `topics` into the shared bag, which its owner finishes after the
/// graph stops. After a failed write (a full disk) it writes nothing more: the failure was
/// reported once, and whoever feeds the graph stops on [`BagWriter::failed`].
pub struct BagRecorder {
    bag: Arc<Mutex<Option<BagWriter>>>,
    topics: Vec<&'static str>,
    clock: i64,
    written: u64,
    /// Messages that arrived after a write failed.
    not_recorded: u64,
}

impl BagRecorder {
    /// A recorder of `topics` (each already added to the bag) into `bag`.
    pub fn new(bag: Arc<Mutex<Option<BagWriter>>>, topics: Vec<&'static str>) -> Self {
        Self {
            bag,
            topics,
            clock: 0,
            written: 0,
            not_recorded: 0,
        }
    }
}

impl Node for BagRecorder {
    fn name(&self) -> &'static str {
        NAME
    }

    fn subscriptions(&self) -> Vec<&'static str> {
        self.topics.clone()
    }

    fn publications(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn handle(&mut self, topic: &str, msg: Arc<Msg>) -> Result<Vec<Publication>> {
        // Log time: the message's stamp (the input's timeline); a Bool has none, so the
        // newest stamp seen.
        let stamp = match msg.as_ref() {
            Msg::Image(m) => stamp_ns(&m.header),
            Msg::Diagnostics(m) => stamp_ns(&m.header),
            Msg::Bool(_) => self.clock,
        };
        self.clock = self.clock.max(stamp);
        let log_time = u64::try_from(stamp).unwrap_or(0);
        let mut guard = self.bag.lock().unwrap_or_else(|e| e.into_inner());
        let bag = guard.as_mut().context("the output bag is closed")?;
        if bag.failed() {
            self.not_recorded += 1;
            return Ok(Vec::new());
        }
        match msg.as_ref() {
            Msg::Image(m) => bag.write(topic, log_time, m)?,
            Msg::Bool(m) => bag.write(topic, log_time, m)?,
            Msg::Diagnostics(m) => bag.write(topic, log_time, m)?,
        }
        self.written += 1;
        Ok(Vec::new())
    }

    fn on_clock(&mut self, now_ns: i64) -> Vec<Publication> {
        self.clock = self.clock.max(now_ns);
        Vec::new()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("written", self.written),
            ("not_recorded", self.not_recorded),
        ]
    }
}
