//! A rosbag2 directory from one input (`metadata.yaml`, then the MCAP; see `stars_fuzz::join`):
//! opened, its attachments and sequence table read, every message iterated and decoded.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stars::bag::BagReader;
use stars::msg::{Bool, DiagnosticArray};

fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a scratch directory"))
}

fuzz_target!(|data: &[u8]| {
    let Some(files) = stars_fuzz::split(data, 2) else {
        return;
    };
    let dir = scratch().path();
    std::fs::write(dir.join("metadata.yaml"), files[0]).expect("scratch is writable");
    std::fs::write(dir.join("bag_0.mcap"), files[1]).expect("scratch is writable");
    let Ok(bag) = BagReader::open(dir) else {
        return;
    };
    let _ = bag.sequence_table();
    let names: Vec<String> = bag.attachment_names().map(str::to_string).collect();
    for name in names {
        let _ = bag.attachment(&name);
    }
    let Ok(mut messages) = bag.messages(&[]) else {
        return;
    };
    while let Some(m) = messages.next_message() {
        let Ok(m) = m else { break };
        let _ = m.image();
        let _ = m.decode::<Bool>();
        let _ = m.decode::<DiagnosticArray>();
    }
});
