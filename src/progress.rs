//! Progress reporting the library's long loops call into; the terminal implementation
//! (indicatif bars) lives in `cli::progress`, so library code never depends on the CLI.

/// Receives progress from a long-running loop.
pub trait Progress {
    /// The loop has `n` items to do.
    fn set_length(&self, n: u64);
    /// `n` more items are done.
    fn inc(&self, n: u64);
    /// A short status line (e.g. the current loss).
    fn set_message(&self, msg: String);
    /// The loop is over.
    fn finish(&self);
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn set_length(&self, _: u64) {}
    fn inc(&self, _: u64) {}
    fn set_message(&self, _: String) {}
    fn finish(&self) {}
}
