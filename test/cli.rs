//! The command line as a user meets it: help, unknown verbs, exit codes.
mod support;

use support::stars;

/// Every verb of `stars`.
const VERBS: [&str; 13] = [
    "demo",
    "bench",
    "synth",
    "bag",
    "eval",
    "calibrate",
    "detect",
    "features",
    "train",
    "models",
    "model",
    "refine",
    "run",
];

#[test]
fn help_lists_every_verb() {
    let out = stars(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for verb in VERBS {
        assert!(
            help.contains(verb),
            "--help does not mention {verb}:\n{help}"
        );
    }
}

#[test]
fn unknown_verb_exits_2() {
    let out = stars(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_verb_has_help() {
    for verb in VERBS {
        let out = stars(&[verb, "--help"]);
        assert!(
            out.status.success(),
            "{verb} --help failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("Usage"),
            "{verb} --help has no usage:\n{help}"
        );
    }
}
