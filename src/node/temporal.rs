//! # temporal_node
//!
//! Pairs each detector map with the backbone features and the camera frame of the same
//! `header.stamp` (exact match, bounded buffers), feeds the pairs in stamp order to a
//! [`TemporalMethod`] through the shared window policy ([`Sequencer`]: a new window on a stamp
//! gap, a stamp going backwards, or a new `frame_id`), and publishes the refined map and its
//! overlay. One refined map is published per detector map, whatever happens to the features:
//! a map whose features were dropped, or whose features are later than `feature_timeout_s` on
//! the input clock, is passed through unchanged (and the window restarts after it, so a window
//! never spans a hole); when the whole feature stream stops the node says so with a WARN on
//! `/diagnostics` and keeps publishing the detector's maps, and an OK when features return.
//!
//! **Subscribed topics**
//! - `/camera/image_raw` (`sensor_msgs/Image`, 8-bit colour or mono): frames for the overlay.
//! - `/stars/features` (`sensor_msgs/Image`, `32FC<C>`): patch features (needed only by methods
//!   that use them, e.g. STARS).
//! - `/stars/detector/anomaly_map` (`sensor_msgs/Image`, 32FC1 in [0, 1]): detector maps.
//!
//! **Published topics**
//! - `/stars/refined/anomaly_map` (`sensor_msgs/Image`, 32FC1 in [0, 1], the detector map's
//!   size): one per detector map, header copied from it.
//! - `/stars/refined/overlay` (`sensor_msgs/Image`, rgb8, the frame's size): the refined map in
//!   the Turbo colormap blended on the frame (none when the frame was not received).
//! - `/diagnostics` (`diagnostic_msgs/DiagnosticArray`): `stars/temporal` WARN when the feature
//!   stream stops (pass-through), OK when it resumes.
//!
//! **Parameters**
//! - `max_gap_s (double, default 0.5)`: a stamp gap longer than this starts a new window.
//!   (0, 3600].
//! - `buffer_size (int, default 8)`: stamps held per input while waiting for their partner; the
//!   oldest is evicted beyond it (counted). 1..=1000.
//! - `feature_timeout_s (double, default 0.5)`: how long on the input clock a map waits for its
//!   features before it is passed through. [0, 60].
//! - `overlay_alpha (double, default 0.5)`: weight of the heat colours over the frame. [0, 1].
//! - `queue_depth (int, default 1)`: detector maps waiting; a full queue drops the oldest, so a
//!   slow method works on the newest map. Frames and features queue up to `buffer_size` (they
//!   are only buffered). 1..=100.
//!
//! NaN/Inf policy: a detector map with non-finite values is counted (`nonfinite_maps`), skips
//! the method (whose window is left as it was) and is published unchanged, so the alert node
//! sees the bad values and reports them; it is never turned into a clear map.
use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::config::check;
use super::maps::{features_from_image, map_from_image, map_to_image};
use super::{seconds_to_ns, stamp_ns, topics, Msg, Node, Publication};
use crate::msg::{DiagnosticArray, DiagnosticStatus, Header, Image, KeyValue};
use crate::temporal::{AnomalyMap, Frame, PatchFeatures, Sequencer, TemporalMethod};
use crate::viz::overlay::blend;

/// Parameters of the temporal node (defaults in `Default`, mirrored in `config/stars.yaml`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[cfg_attr(feature = "ros2", derive(r2r::RosParams))]
#[serde(deny_unknown_fields, default)]
pub struct TemporalParams {
    /// Stamp gap (seconds) that starts a new window.
    pub max_gap_s: f64,
    /// Stamps buffered per input while waiting for a partner.
    pub buffer_size: u32,
    /// Seconds (input clock) a map waits for its features.
    pub feature_timeout_s: f64,
    /// Heat weight of the overlay.
    pub overlay_alpha: f64,
    /// Detector maps waiting (frames and features queue up to buffer_size).
    pub queue_depth: u32,
}

impl Default for TemporalParams {
    fn default() -> Self {
        Self {
            max_gap_s: 0.5,
            buffer_size: 8,
            feature_timeout_s: 0.5,
            overlay_alpha: 0.5,
            queue_depth: 1,
        }
    }
}

impl TemporalParams {
    /// Checks the ranges documented above.
    pub fn validate(&self) -> Result<()> {
        let p = "temporal_node";
        check(
            self.max_gap_s > 0.0 && self.max_gap_s <= 3600.0,
            &format!("{p}.max_gap_s"),
            self.max_gap_s,
            "(0, 3600]",
        )?;
        check(
            (1..=1000).contains(&self.buffer_size),
            &format!("{p}.buffer_size"),
            self.buffer_size,
            "1..=1000",
        )?;
        check(
            (0.0..=60.0).contains(&self.feature_timeout_s),
            &format!("{p}.feature_timeout_s"),
            self.feature_timeout_s,
            "[0, 60]",
        )?;
        check(
            (0.0..=1.0).contains(&self.overlay_alpha),
            &format!("{p}.overlay_alpha"),
            self.overlay_alpha,
            "[0, 1]",
        )?;
        check(
            (1..=100).contains(&self.queue_depth),
            &format!("{p}.queue_depth"),
            self.queue_depth,
            "1..=100",
        )
    }
}

/// Event counts of the temporal node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TemporalCounters {
    /// Refined maps published (one per detector map).
    pub refined: u64,
    /// Maps published unchanged because their features were missing or late.
    pub passed_through: u64,
    /// Features evicted or aged out without a detector map of their stamp.
    pub unmatched_features: u64,
    /// Frames evicted or aged out without a detector map of their stamp.
    pub unmatched_frames: u64,
    /// Inputs stamped at or before a stamp already published (arrived too late).
    pub late: u64,
    /// Detector maps with NaN/Inf values.
    pub nonfinite_maps: u64,
    /// Refined maps published without an overlay (their frame never arrived).
    pub no_overlay: u64,
    /// Window restarts (gaps, stamps going backwards, new sequences, holes).
    pub restarts: u64,
}

/// A detector map waiting for its features.
struct PendingMap {
    header: Header,
    map: AnomalyMap,
}

/// The temporal node's logic.
pub struct TemporalNode {
    params: TemporalParams,
    sequencer: Sequencer,
    frames: BTreeMap<i64, Arc<Msg>>,
    features: BTreeMap<i64, PatchFeatures>,
    maps: BTreeMap<i64, PendingMap>,
    /// Stamp of the last published map: anything at or before it is late.
    last_done: Option<i64>,
    /// Newest stamp seen on any input or clock tick (the input clock).
    clock: i64,
    newest_feature: Option<i64>,
    frame_id: Option<String>,
    degraded: bool,
    explicit_resets: u64,
    counters: TemporalCounters,
}

impl TemporalNode {
    /// A node running `method` under the window policy of `params`.
    pub fn new(params: TemporalParams, method: Box<dyn TemporalMethod>) -> Result<Self> {
        params.validate()?;
        let sequencer = Sequencer::new(method, seconds_to_ns(params.max_gap_s));
        Ok(Self {
            params,
            sequencer,
            frames: BTreeMap::new(),
            features: BTreeMap::new(),
            maps: BTreeMap::new(),
            last_done: None,
            clock: i64::MIN,
            newest_feature: None,
            frame_id: None,
            degraded: false,
            explicit_resets: 0,
            counters: TemporalCounters::default(),
        })
    }

    /// Event counts so far.
    pub fn stats(&self) -> TemporalCounters {
        TemporalCounters {
            restarts: self.sequencer.restarts() + self.explicit_resets,
            ..self.counters
        }
    }

    /// True while maps are passed through because the feature stream stopped.
    pub fn degraded(&self) -> bool {
        self.degraded
    }

    /// Whether an input stamped `t` comes too late; a stamp far behind (more than a window
    /// gap) is a new timeline (a replay restarted) and clears the node instead.
    fn is_late(&mut self, t: i64) -> bool {
        let Some(done) = self.last_done else {
            return false;
        };
        if t > done {
            return false;
        }
        if done - t > seconds_to_ns(self.params.max_gap_s) {
            self.frames.clear();
            self.features.clear();
            self.maps.clear();
            self.last_done = None;
            self.newest_feature = None;
            self.sequencer.new_sequence();
            self.explicit_resets += 1;
            return false;
        }
        self.counters.late += 1;
        true
    }

    fn on_frame(&mut self, msg: Arc<Msg>) -> Result<()> {
        let t = stamp_ns(&msg.image()?.header);
        if self.is_late(t) {
            return Ok(());
        }
        self.frames.insert(t, msg);
        while self.frames.len() > self.params.buffer_size as usize {
            self.frames.pop_first();
            self.counters.unmatched_frames += 1;
        }
        Ok(())
    }

    fn on_features(&mut self, image: &Image) -> Result<()> {
        let t = stamp_ns(&image.header);
        let features = features_from_image(image)?;
        if !self.sequencer.method().needs_features() {
            return Ok(()); // nothing to pair: maps go out as they come
        }
        if self.is_late(t) {
            return Ok(());
        }
        self.features.insert(t, features);
        self.newest_feature = self.newest_feature.max(Some(t));
        while self.features.len() > self.params.buffer_size as usize {
            self.features.pop_first();
            self.counters.unmatched_features += 1;
        }
        Ok(())
    }

    fn on_map(&mut self, image: &Image) -> Result<()> {
        let t = stamp_ns(&image.header);
        let map = map_from_image(image)?;
        if self.is_late(t) {
            return Ok(());
        }
        let header = image.header.clone();
        self.maps.insert(t, PendingMap { header, map });
        Ok(())
    }

    /// Publishes every waiting map that is ready, in stamp order.
    fn drain(&mut self) -> Vec<Publication> {
        let mut out = Vec::new();
        let needs = self.sequencer.method().needs_features();
        let timeout = seconds_to_ns(self.params.feature_timeout_s);
        while let Some((&t, _)) = self.maps.first_key_value() {
            let paired = self.features.contains_key(&t);
            let overflow = self.maps.len() > self.params.buffer_size as usize;
            // Features come in stamp order, so newer features mean this stamp's were dropped.
            let skipped = self.newest_feature.is_some_and(|f| f > t);
            let timed_out = self.clock.saturating_sub(t) > timeout;
            if needs && !paired && !(skipped || overflow || timed_out) {
                break;
            }
            let Some(pending) = self.maps.remove(&t) else {
                break;
            };
            let stream_stopped = needs && !paired && timed_out && !skipped;
            out.extend(self.publish(t, pending, stream_stopped));
        }
        out
    }

    /// Runs the method on the map stamped `t` (or passes it through) and publishes the result.
    fn publish(&mut self, t: i64, pending: PendingMap, stream_stopped: bool) -> Vec<Publication> {
        let mut out = Vec::new();
        // Older buffered inputs will never be paired now.
        while self.frames.first_key_value().is_some_and(|(&k, _)| k < t) {
            self.frames.pop_first();
            self.counters.unmatched_frames += 1;
        }
        while self.features.first_key_value().is_some_and(|(&k, _)| k < t) {
            self.features.pop_first();
            self.counters.unmatched_features += 1;
        }
        let features = self.features.remove(&t);
        let frame = self.frames.remove(&t);
        let needs = self.sequencer.method().needs_features();
        // Degraded from a stopped stream until a map is refined with its features again.
        let degraded = needs && (stream_stopped || (self.degraded && features.is_none()));
        if self.frame_id.as_deref() != Some(pending.header.frame_id.as_str()) {
            if self.frame_id.is_some() {
                self.sequencer.new_sequence();
                self.explicit_resets += 1;
            }
            self.frame_id = Some(pending.header.frame_id.clone());
        }
        let refined = if pending.map.check_finite().is_err() {
            self.counters.nonfinite_maps += 1;
            pending.map
        } else if needs && features.is_none() {
            self.counters.passed_through += 1;
            // The method's window would otherwise span the hole.
            self.sequencer.new_sequence();
            self.explicit_resets += 1;
            pending.map
        } else {
            let frame = Frame {
                stamp_ns: t,
                map: pending.map,
                features,
            };
            match self.sequencer.step(&frame) {
                Ok((refined, _)) => refined,
                Err(e) => {
                    tracing::warn!("temporal_node: {e:#}; passing the map through");
                    self.counters.passed_through += 1;
                    frame.map
                }
            }
        };
        if degraded != self.degraded {
            self.degraded = degraded;
            out.push(Publication::new(
                topics::DIAGNOSTICS,
                self.health(&pending.header),
            ));
        }
        self.last_done = Some(t);
        self.counters.refined += 1;
        let header = pending.header;
        match frame.as_deref().map(Msg::image) {
            Some(Ok(image)) => match image.to_rgb8() {
                Ok(rgb) => {
                    let overlay = blend(
                        &rgb,
                        &refined.data,
                        refined.width as u32,
                        refined.height as u32,
                        self.params.overlay_alpha as f32,
                    );
                    out.push(Publication::new(
                        topics::REFINED_OVERLAY,
                        Image::from_rgb8(header.clone(), &overlay),
                    ));
                }
                Err(e) => {
                    tracing::warn!("temporal_node: frame for the overlay: {e:#}");
                    self.counters.no_overlay += 1;
                }
            },
            _ => self.counters.no_overlay += 1,
        }
        out.insert(
            0,
            Publication::new(topics::REFINED_MAP, map_to_image(header, &refined)),
        );
        out
    }

    /// `stars/temporal` health: WARN while passing maps through, OK otherwise.
    fn health(&self, header: &Header) -> DiagnosticArray {
        let (level, message) = match self.degraded {
            true => (
                DiagnosticStatus::WARN,
                "feature stream stopped: detector maps passed through",
            ),
            false => (DiagnosticStatus::OK, "refining with features"),
        };
        DiagnosticArray {
            header: header.clone(),
            status: vec![DiagnosticStatus {
                level,
                name: "stars/temporal".into(),
                message: message.into(),
                hardware_id: header.frame_id.clone(),
                values: vec![KeyValue {
                    key: "method".into(),
                    value: self.sequencer.method().name().into(),
                }],
            }],
        }
    }
}

impl Node for TemporalNode {
    fn name(&self) -> &'static str {
        "temporal_node"
    }

    fn subscriptions(&self) -> Vec<&'static str> {
        vec![topics::CAMERA, topics::FEATURES, topics::DETECTOR_MAP]
    }

    /// Maps queue `queue_depth` deep (a slow method works on the newest); frames and features
    /// are only buffered, so they queue up to `buffer_size` and are not lost to a slow map.
    fn queue_depth(&self, topic: &str, depth: usize) -> usize {
        match topic {
            topics::DETECTOR_MAP => depth,
            _ => depth.max(self.params.buffer_size as usize),
        }
    }

    fn publications(&self) -> Vec<&'static str> {
        vec![
            topics::REFINED_MAP,
            topics::REFINED_OVERLAY,
            topics::DIAGNOSTICS,
        ]
    }

    fn handle(&mut self, topic: &str, msg: Arc<Msg>) -> Result<Vec<Publication>> {
        let image = msg.image().with_context(|| format!("on {topic}"))?;
        self.clock = self.clock.max(stamp_ns(&image.header));
        match topic {
            topics::CAMERA => self.on_frame(msg.clone()),
            topics::FEATURES => self.on_features(image),
            topics::DETECTOR_MAP => self.on_map(image),
            other => anyhow::bail!("temporal_node does not subscribe to {other}"),
        }
        .with_context(|| format!("on {topic}"))?;
        Ok(self.drain())
    }

    fn on_clock(&mut self, now_ns: i64) -> Vec<Publication> {
        self.clock = self.clock.max(now_ns);
        self.drain()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = self.stats();
        vec![
            ("refined", c.refined),
            ("passed_through", c.passed_through),
            ("unmatched_features", c.unmatched_features),
            ("unmatched_frames", c.unmatched_frames),
            ("late", c.late),
            ("nonfinite_maps", c.nonfinite_maps),
            ("no_overlay", c.no_overlay),
            ("restarts", c.restarts),
        ]
    }
}

/// The method used when no refiner is given: each detector map is published unchanged.
pub struct PassThrough;

impl PassThrough {
    /// How runs label it.
    pub const LABEL: &'static str = "no refiner: detector maps passed through";
}

impl TemporalMethod for PassThrough {
    fn name(&self) -> &str {
        "passthrough"
    }

    fn reset(&mut self) {}

    fn step(&mut self, frame: &Frame) -> Result<AnomalyMap> {
        Ok(frame.map.clone())
    }
}
