//! The YAML readers: the node parameter file and the alert threshold file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stars::eval::calibrate::Threshold;
use stars::node::config::GraphConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = GraphConfig::parse(text, "fuzz input");
    let _ = Threshold::parse(text, "fuzz input");
});
