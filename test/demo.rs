//! `stars demo --preset tiny`: the README's first command, end to end (synth, both trainings,
//! calibration, the node graph over a bag, the baselines, eval) in the suite.
mod support;

use support::{assert_success, stars};

#[test]
fn tiny_demo_reports_every_method_and_labels_the_placeholder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let run = stars(&["demo", "--preset", "tiny", "--out", out.to_str().unwrap()]);
    assert_success(&run);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("PLACEHOLDER_RANDOM_BACKBONE"),
        "the demo must say its numbers come from the placeholder:\n{stdout}"
    );

    let text = std::fs::read_to_string(out.join("results.json")).unwrap();
    let results: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        results["weights"]
            .as_str()
            .unwrap()
            .contains("PLACEHOLDER_RANDOM_BACKBONE"),
        "{text}"
    );
    assert_eq!(results["random_backbone"], true);
    let methods = results["methods"].as_object().unwrap();
    let mut names: Vec<&str> = methods.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["centroid", "ema", "flowclas", "kalman", "stars"]);
    for (name, m) in methods {
        for metric in ["auroc", "ap", "fpr95", "aupro"] {
            let v = m[metric].as_f64().unwrap_or(f64::NAN);
            assert!((0.0..=1.0).contains(&v), "{name} {metric} = {v}: {text}");
        }
        assert!(
            m["label"].as_str().unwrap().contains("PLACEHOLDER"),
            "{name} is not labelled: {text}"
        );
    }
    // STARS's row comes from the refiner in the graph, not the detector maps passed through
    assert_ne!(
        methods["stars"]["ap"], methods["flowclas"]["ap"],
        "the graph passed the detector maps through: {text}"
    );

    for file in [
        "index.md",
        "threshold.yaml",
        "eval/table.md",
        "eval/roc.png",
        "temporal_figure.png",
        "overlay.gif",
        "checkpoints/detector/detector.json",
        "checkpoints/refiner/refiner.json",
        "run/test/metadata.yaml",
    ] {
        assert!(out.join(file).is_file(), "the demo did not write {file}");
    }

    // A second run into the same folder replaces the earlier demo; a foreign folder is refused.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "keep me").unwrap();
    let refused = stars(&[
        "demo",
        "--preset",
        "tiny",
        "--out",
        foreign.to_str().unwrap(),
    ]);
    support::assert_clean_error(&refused, "holds no earlier demo");
    assert!(foreign.join("notes.txt").is_file());
}
