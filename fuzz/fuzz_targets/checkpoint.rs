//! The checkpoint loaders (detector, refiner, DINOv2 in both namings): the JSON or config half
//! and the safetensors half written to a folder, then loaded.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stars_fuzz::{load_checkpoint, CHECKPOINT_KINDS};

fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a scratch directory"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let kind = selector as usize % CHECKPOINT_KINDS.len();
    let (name, file_names) = CHECKPOINT_KINDS[kind];
    let Some(files) = stars_fuzz::split(rest, file_names.len()) else {
        return;
    };
    let dir = scratch().path().join(name);
    std::fs::create_dir_all(&dir).expect("scratch is writable");
    for (file, bytes) in file_names.iter().zip(files) {
        std::fs::write(dir.join(file), bytes).expect("scratch is writable");
    }
    let _ = load_checkpoint(kind, &dir);
});
