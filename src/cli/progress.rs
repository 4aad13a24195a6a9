//! Progress bars shared by every long-running verb.
use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` items labelled `what`; hidden when stderr is not a terminal so logs stay clean.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12.cyan.bold} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// The indicatif bar as the library's progress sink.
pub struct Bar(pub ProgressBar);

impl crate::progress::Progress for Bar {
    fn set_length(&self, n: u64) {
        self.0.set_length(n);
    }
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
    fn set_message(&self, msg: String) {
        self.0.set_message(msg);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
