//! Node health for `/diagnostics` and the clock the watchdogs run on, for the r2r binding.
//!
//! Kept free of ROS so the rules are tested without it: [`Health`] turns a stage's running
//! counts into one `DiagnosticStatus` per period (about 1 Hz), the way `diagnostic_updater`
//! tasks report, and [`WatchdogClock`] keeps the input clock moving when a simulated clock
//! stops.
use super::inproc::LiveCounts;
use crate::msg::{DiagnosticStatus, KeyValue};

/// Input silence (wall clock) after which a node that had input reports ERROR.
pub const INPUT_SILENCE_NS: i64 = 3_000_000_000;

/// One node's health reporter.
pub struct Health {
    name: String,
    hardware_id: String,
    /// Counts and wall time of the previous report.
    previous: Option<(LiveCounts, i64)>,
    /// Wall time input was last seen.
    last_input: Option<i64>,
}

impl Health {
    /// A reporter for status `"<node>: <task>"` on `hardware_id`.
    pub fn new(node: &str, task: &str, hardware_id: &str) -> Self {
        Self {
            name: format!("{node}: {task}"),
            hardware_id: hardware_id.to_string(),
            previous: None,
            last_input: None,
        }
    }

    /// The status at wall time `wall_ns` given the stage's counts: OK while input flows,
    /// WARN before the first input and when messages failed since the last report, ERROR when
    /// input stopped for [`INPUT_SILENCE_NS`].
    pub fn report(&mut self, counts: LiveCounts, wall_ns: i64) -> DiagnosticStatus {
        let seen = |c: &LiveCounts| c.handled + c.errors + c.dropped;
        let (before, since) = self.previous.unwrap_or((LiveCounts::default(), wall_ns));
        if seen(&counts) > seen(&before) {
            self.last_input = Some(wall_ns);
        }
        let period_s = (wall_ns - since) as f64 / 1e9;
        let input_hz = if period_s > 0.0 {
            counts.handled.saturating_sub(before.handled) as f64 / period_s
        } else {
            0.0
        };
        let new_errors = counts.errors.saturating_sub(before.errors);
        let new_drops = counts.dropped.saturating_sub(before.dropped);
        self.previous = Some((counts, wall_ns));
        let silent_ns = self.last_input.map(|t| wall_ns - t);
        let (level, message) = match silent_ns {
            None => (DiagnosticStatus::WARN, "waiting for input".to_string()),
            Some(s) if s >= INPUT_SILENCE_NS => (
                DiagnosticStatus::ERROR,
                format!("no input for {:.1} s", s as f64 / 1e9),
            ),
            Some(_) if new_errors > 0 => (
                DiagnosticStatus::WARN,
                format!("{new_errors} messages failed"),
            ),
            Some(_) => (
                DiagnosticStatus::OK,
                format!("{input_hz:.1} Hz, {new_drops} skipped"),
            ),
        };
        let kv = |key: &str, value: String| KeyValue {
            key: key.into(),
            value,
        };
        DiagnosticStatus {
            level,
            name: self.name.clone(),
            message,
            hardware_id: self.hardware_id.clone(),
            values: vec![
                kv("input_hz", format!("{input_hz:.2}")),
                kv("handled", counts.handled.to_string()),
                kv("skipped", counts.dropped.to_string()),
                kv("errors", counts.errors.to_string()),
                kv(
                    "input_silence_s",
                    silent_ns.map_or("none yet".into(), |s| format!("{:.1}", s as f64 / 1e9)),
                ),
            ],
        }
    }
}

/// The input clock of the watchdogs under a ROS clock.
///
/// With `use_sim_time` the ROS clock is whatever `/clock` last said, so when the player stops
/// (or dies, or is paused) the clock stops with it and a watchdog on it would wait forever:
/// silence would read as "clear". While the ROS clock stands still this clock runs on from its
/// last value at wall rate, so input silence is seen whatever happened to the player. On a
/// system clock, or while `/clock` advances, it is the ROS clock itself.
#[derive(Default)]
pub struct WatchdogClock {
    /// The last distinct ROS time and the wall time it was first read.
    anchor: Option<(i64, i64)>,
}

impl WatchdogClock {
    /// The input clock for ROS time `ros_ns` read at monotonic wall time `wall_ns`.
    pub fn now(&mut self, ros_ns: i64, wall_ns: i64) -> i64 {
        match self.anchor {
            Some((ros, wall)) if ros == ros_ns => ros + (wall_ns - wall).max(0),
            _ => {
                self.anchor = Some((ros_ns, wall_ns));
                ros_ns
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn counts(handled: u64, errors: u64, dropped: u64) -> LiveCounts {
        LiveCounts {
            handled,
            errors,
            dropped,
        }
    }

    #[test]
    fn health_follows_input_from_waiting_to_ok_to_error() {
        let mut h = Health::new("detector_node", "detection", "cpu");
        let s = h.report(counts(0, 0, 0), 0);
        assert_eq!(
            (s.level, s.name.as_str()),
            (DiagnosticStatus::WARN, "detector_node: detection")
        );
        assert_eq!(s.hardware_id, "cpu");
        let s = h.report(counts(10, 0, 2), S);
        assert_eq!(s.level, DiagnosticStatus::OK, "{s:?}");
        assert_eq!(s.message, "10.0 Hz, 2 skipped");
        let s = h.report(counts(20, 1, 2), 2 * S);
        assert_eq!(s.level, DiagnosticStatus::WARN, "{s:?}");
        // input stops: OK until the silence limit, then ERROR
        let s = h.report(counts(20, 1, 2), 3 * S);
        assert_eq!(s.level, DiagnosticStatus::OK);
        let s = h.report(counts(20, 1, 2), 5 * S);
        assert_eq!(s.level, DiagnosticStatus::ERROR, "{s:?}");
        assert_eq!(s.message, "no input for 3.0 s");
        // and recovers when input returns
        let s = h.report(counts(25, 1, 2), 6 * S);
        assert_eq!(s.level, DiagnosticStatus::OK);
    }

    #[test]
    fn watchdog_clock_runs_on_when_the_ros_clock_stops() {
        let mut c = WatchdogClock::default();
        // advancing ROS clock: itself
        assert_eq!(c.now(100 * S, 0), 100 * S);
        assert_eq!(c.now(101 * S, S), 101 * S);
        // the player stopped: wall time carries it on
        assert_eq!(c.now(101 * S, 2 * S), 102 * S);
        assert_eq!(c.now(101 * S, 4 * S), 104 * S);
        // the clock moves again (or jumps back, a looped bag): it takes over at once
        assert_eq!(c.now(50 * S, 5 * S), 50 * S);
        assert_eq!(c.now(51 * S, 6 * S), 51 * S);
    }
}
