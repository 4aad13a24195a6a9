//! The command line as a user meets it: help, unknown verbs, exit codes.
mod support;

use support::stars;

#[test]
fn help_lists_every_verb() {
    let out = stars(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for verb in [
        "synth",
        "bag",
        "eval",
        "calibrate",
        "features",
        "train",
        "models",
    ] {
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
