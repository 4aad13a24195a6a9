//! # alert_node
//!
//! Turns refined anomaly maps into the arm controller's alert. A frame is anomalous when at
//! least `min_area_px` pixels reach the calibrated threshold (the FPR@95 operating point `stars
//! calibrate` writes); the alert raises after `k` anomalous frames within the last `n` and
//! clears after `n` clean frames in a row, so one noisy frame flips nothing. Silence is never
//! "clear": when no map arrives for `stale_after_s` on the input clock (the recorded stamps
//! during replay), the status goes STALE and `active` true, and stays raised until `n` clean
//! frames follow.
//!
//! **Subscribed topics**
//! - `/stars/refined/anomaly_map` (`sensor_msgs/Image`, 32FC1 in [0, 1]): refined maps.
//!
//! **Published topics**
//! - `/stars/alert/active` (`std_msgs/Bool`, reliable, transient local): one per map, and on
//!   going STALE.
//! - `/diagnostics` (`diagnostic_msgs/DiagnosticArray`): the status below whenever its level
//!   changes (clear, raised, NaN/Inf, STALE), so a diagnostic aggregator sees every transition.
//! - `/stars/alert/status` (`diagnostic_msgs/DiagnosticArray`): status `stars/alert`, level OK
//!   (clear), WARN (alert raised), ERROR (map with NaN/Inf), STALE (no input); key-values
//!   `score` (max of the map), `threshold`, `area` (pixels at or above it), `bbox` (`x_min y_min
//!   x_max y_max` of those pixels, empty when none), `stamp` (`sec.nanosec` of the map),
//!   `active`, `anomalous_in_window` (`m/n`), `nonfinite` (NaN/Inf pixels).
//!
//! **Parameters**
//! - `threshold_file (string, default "config/threshold.yaml")`: the calibrated threshold
//!   (`stars calibrate --out`); read at start-up, a missing or malformed file is fatal.
//! - `min_area_px (int, default 50)`: pixels at or above the threshold that make a frame
//!   anomalous. 1..=10^8.
//! - `k (int, default 3)`: anomalous frames within the last `n` that raise the alert. 1..=n.
//! - `n (int, default 5)`: window of the k-of-n rule, and clean frames in a row that clear it.
//!   1..=1000.
//! - `stale_after_s (double, default 1.0)`: input silence (input clock) that makes the status
//!   STALE and `active` true. (0, 3600].
//! - `hardware_id (string, default "camera")`: `hardware_id` of the status.
//! - `queue_depth (int, default 4)`: maps waiting for this node; a full queue drops the oldest.
//!   1..=100.
//!
//! NaN/Inf policy: non-finite pixels are counted and make the frame anomalous, with level ERROR
//! for that frame: a broken map can raise the alert but never read as clear.
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::config::check;
use super::maps::map_from_image;
use super::{seconds_to_ns, stamp_ns, topics, Msg, Node, Publication};
use crate::eval::calibrate::Threshold;
use crate::msg::{Bool, DiagnosticArray, DiagnosticStatus, Header, KeyValue, Time};
use crate::temporal::AnomalyMap;

/// Parameters of the alert node (defaults in `Default`, mirrored in `config/stars.yaml`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[cfg_attr(feature = "ros2", derive(r2r::RosParams))]
#[serde(deny_unknown_fields, default)]
pub struct AlertParams {
    /// Threshold file written by `stars calibrate`.
    pub threshold_file: String,
    /// Pixels at or above the threshold that make a frame anomalous.
    pub min_area_px: u32,
    /// Anomalous frames within the last `n` that raise the alert.
    pub k: u32,
    /// Window of the k-of-n rule; clean frames in a row that clear it.
    pub n: u32,
    /// Input silence (seconds, input clock) that makes the status STALE.
    pub stale_after_s: f64,
    /// `hardware_id` of the status.
    pub hardware_id: String,
    /// Input queue depth.
    pub queue_depth: u32,
}

impl Default for AlertParams {
    fn default() -> Self {
        Self {
            threshold_file: "config/threshold.yaml".into(),
            min_area_px: 50,
            k: 3,
            n: 5,
            stale_after_s: 1.0,
            hardware_id: "camera".into(),
            queue_depth: 4,
        }
    }
}

impl AlertParams {
    /// Checks the ranges documented above.
    pub fn validate(&self) -> Result<()> {
        let p = "alert_node";
        check(
            (1..=100_000_000).contains(&self.min_area_px),
            &format!("{p}.min_area_px"),
            self.min_area_px,
            "1..=10^8",
        )?;
        check(
            (1..=1000).contains(&self.n),
            &format!("{p}.n"),
            self.n,
            "1..=1000",
        )?;
        check(
            (1..=self.n).contains(&self.k),
            &format!("{p}.k"),
            self.k,
            &format!("1..=n ({})", self.n),
        )?;
        check(
            self.stale_after_s > 0.0 && self.stale_after_s <= 3600.0,
            &format!("{p}.stale_after_s"),
            self.stale_after_s,
            "(0, 3600]",
        )?;
        check(
            (1..=100).contains(&self.queue_depth),
            &format!("{p}.queue_depth"),
            self.queue_depth,
            "1..=100",
        )
    }
}

/// Event counts of the alert node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlertCounters {
    /// Maps scored.
    pub frames: u64,
    /// Maps that were anomalous (area or non-finite values).
    pub anomalous_frames: u64,
    /// Maps with NaN/Inf values.
    pub nonfinite_frames: u64,
    /// Changes of `active` (raise and clear).
    pub transitions: u64,
    /// Times the input went silent for `stale_after_s`.
    pub stale_events: u64,
}

/// What one map says.
struct Score {
    max: f32,
    area: u64,
    nonfinite: u64,
    bbox: Option<[usize; 4]>,
}

fn score(map: &AnomalyMap, tau: f32) -> Score {
    let mut s = Score {
        max: f32::NAN,
        area: 0,
        nonfinite: 0,
        bbox: None,
    };
    for (i, &v) in map.data.iter().enumerate() {
        if !v.is_finite() {
            s.nonfinite += 1;
            continue;
        }
        s.max = if s.max.is_nan() { v } else { s.max.max(v) };
        if v >= tau {
            s.area += 1;
            let (x, y) = (i % map.width, i / map.width);
            let b = s.bbox.get_or_insert([x, y, x, y]);
            *b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
        }
    }
    s
}

fn kv(key: &str, value: impl ToString) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.to_string(),
    }
}

fn stamp_text(t: Time) -> String {
    format!("{}.{:09}", t.sec, t.nanosec)
}

/// The alert node's logic.
pub struct AlertNode {
    params: AlertParams,
    threshold: f32,
    recent: VecDeque<bool>,
    clean_run: usize,
    active: bool,
    stale: bool,
    /// Stamp of the last map, else the first clock tick: where silence is measured from.
    last_input: Option<i64>,
    /// Level of the last status, to publish changes on `/diagnostics`.
    last_level: Option<u8>,
    counters: AlertCounters,
}

impl AlertNode {
    /// A node with `params`, reading the threshold from `params.threshold_file`.
    pub fn new(params: AlertParams) -> Result<Self> {
        params.validate()?;
        let t = Threshold::load(Path::new(&params.threshold_file))
            .context("alert_node.threshold_file")?;
        Self::with_threshold(params, t.threshold)
    }

    /// A node with an explicit threshold in [0, 1] (`params.threshold_file` is not read).
    pub fn with_threshold(params: AlertParams, threshold: f64) -> Result<Self> {
        params.validate()?;
        check(
            (0.0..=1.0).contains(&threshold),
            "alert threshold",
            threshold,
            "[0, 1]",
        )?;
        Ok(Self {
            recent: VecDeque::with_capacity(params.n as usize),
            params,
            threshold: threshold as f32,
            clean_run: 0,
            active: false,
            stale: false,
            last_input: None,
            last_level: None,
            counters: AlertCounters::default(),
        })
    }

    /// Whether the alert is raised.
    pub fn active(&self) -> bool {
        self.active
    }

    /// Event counts so far.
    pub fn stats(&self) -> AlertCounters {
        self.counters
    }

    fn set_active(&mut self, active: bool) {
        if active != self.active {
            self.active = active;
            self.counters.transitions += 1;
        }
    }

    fn status(&self, header: Header, level: u8, message: String, values: Vec<KeyValue>) -> Msg {
        Msg::Diagnostics(DiagnosticArray {
            header,
            status: vec![DiagnosticStatus {
                level,
                name: "stars/alert".into(),
                message,
                hardware_id: self.params.hardware_id.clone(),
                values,
            }],
        })
    }

    fn on_map(&mut self, header: &Header, map: &AnomalyMap) -> Vec<Publication> {
        let t = stamp_ns(header);
        self.last_input = Some(self.last_input.map_or(t, |l| l.max(t)));
        self.stale = false;
        let s = score(map, self.threshold);
        let anomalous = s.nonfinite > 0 || s.area >= u64::from(self.params.min_area_px);
        self.counters.frames += 1;
        self.counters.anomalous_frames += u64::from(anomalous);
        self.counters.nonfinite_frames += u64::from(s.nonfinite > 0);
        if self.recent.len() == self.params.n as usize {
            self.recent.pop_front();
        }
        self.recent.push_back(anomalous);
        self.clean_run = if anomalous { 0 } else { self.clean_run + 1 };
        let hits = self.recent.iter().filter(|a| **a).count();
        if hits >= self.params.k as usize {
            self.set_active(true);
        } else if self.clean_run >= self.params.n as usize {
            self.set_active(false);
        }
        let (level, message) = if s.nonfinite > 0 {
            (
                DiagnosticStatus::ERROR,
                format!(
                    "map has {} NaN/Inf pixels: counted as anomalous",
                    s.nonfinite
                ),
            )
        } else if self.active {
            (DiagnosticStatus::WARN, "anomaly: alert raised".to_string())
        } else {
            (DiagnosticStatus::OK, "clear".to_string())
        };
        let bbox = s
            .bbox
            .map(|b| format!("{} {} {} {}", b[0], b[1], b[2], b[3]))
            .unwrap_or_default();
        let values = vec![
            kv("score", s.max),
            kv("threshold", self.threshold),
            kv("area", s.area),
            kv("bbox", bbox),
            kv("stamp", stamp_text(header.stamp)),
            kv("active", self.active),
            kv("anomalous_in_window", format!("{hits}/{}", self.params.n)),
            kv("nonfinite", s.nonfinite),
        ];
        let status = self.status(header.clone(), level, message, values);
        self.outputs(self.active, status, level)
    }

    /// The flag and the status; the status also on `/diagnostics` when its level changed, so
    /// an aggregator sees every transition without a frame-rate stream.
    fn outputs(&mut self, active: bool, status: Msg, level: u8) -> Vec<Publication> {
        let mut out = vec![Publication::new(
            topics::ALERT_ACTIVE,
            Bool { data: active },
        )];
        if self.last_level.replace(level) != Some(level) {
            out.push(Publication {
                topic: topics::DIAGNOSTICS,
                msg: status.clone(),
            });
        }
        out.push(Publication {
            topic: topics::ALERT_STATUS,
            msg: status,
        });
        out
    }
}

impl Node for AlertNode {
    fn name(&self) -> &'static str {
        "alert_node"
    }

    fn subscriptions(&self) -> Vec<&'static str> {
        vec![topics::REFINED_MAP]
    }

    fn publications(&self) -> Vec<&'static str> {
        vec![
            topics::ALERT_ACTIVE,
            topics::ALERT_STATUS,
            topics::DIAGNOSTICS,
        ]
    }

    fn handle(&mut self, topic: &str, msg: Arc<Msg>) -> Result<Vec<Publication>> {
        let image = msg.image().with_context(|| format!("on {topic}"))?;
        let map = map_from_image(image).with_context(|| format!("on {topic}"))?;
        Ok(self.on_map(&image.header, &map))
    }

    fn on_clock(&mut self, now_ns: i64) -> Vec<Publication> {
        let since = *self.last_input.get_or_insert(now_ns);
        let silence = now_ns.saturating_sub(since);
        if self.stale || silence <= seconds_to_ns(self.params.stale_after_s) {
            return Vec::new();
        }
        self.stale = true;
        self.counters.stale_events += 1;
        self.set_active(true);
        self.recent.clear();
        self.clean_run = 0;
        let stamp = Time::from_nanos(u64::try_from(now_ns).unwrap_or(0));
        let header = Header {
            stamp,
            frame_id: String::new(),
        };
        let values = vec![
            kv("stamp", stamp_text(stamp)),
            kv("active", true),
            kv("silence_s", format!("{:.3}", silence as f64 / 1e9)),
        ];
        let message = format!(
            "no refined map for {:.3} s (stale_after_s {}): alert raised",
            silence as f64 / 1e9,
            self.params.stale_after_s
        );
        let status = self.status(header, DiagnosticStatus::STALE, message, values);
        self.outputs(true, status, DiagnosticStatus::STALE)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = self.counters;
        vec![
            ("frames", c.frames),
            ("anomalous_frames", c.anomalous_frames),
            ("nonfinite_frames", c.nonfinite_frames),
            ("transitions", c.transitions),
            ("stale_events", c.stale_events),
        ]
    }
}
