//! Standard output of the verbs. `println!` panics when stdout is closed or full; the verbs
//! write through [`line`] instead, so a closed pipe ends the command quietly (as ripgrep does)
//! and any other write error is an ordinary one-line error.
use std::io::{self, Write};

/// Writes one formatted line to stdout: `outln!("{} frames", n)?`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Writes `args` and a newline to the locked stdout.
pub fn line(args: std::fmt::Arguments) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .map_err(|e| anyhow::Error::new(e).context("writing to standard output"))
}

/// Whether `error` is a write to a pipe whose reader has gone (`stars bag info BAG | head -1`):
/// the reader has what it wanted, so the command exits 0 without a message.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
