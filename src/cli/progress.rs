//! Progress bars shared by every long-running verb.
use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` items labelled `what`; hidden when stderr is not a terminal so logs stay clean.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12.cyan.bold} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
        )
        .expect("static template is valid")
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}
