//! The full soak: 100,000 frames (or `STARS_SOAK_FRAMES`) through the in-process graph of the
//! real nodes at the tiny preset, memory sampled every 1,000 frames. Prints the figures for
//! docs/reliability.md and writes `target/soak/rss.png` and `target/soak/samples.csv`; the
//! recorded bag (`target/soak/bag`) is then read back by `rosbags` when the test venv exists.
//!
//!     cargo bench --bench soak --profile dev
#[path = "../test/soak_driver.rs"]
mod soak_driver;

use std::path::PathBuf;

use stars::viz::plot::{LegendCorner, LinePlot, Series};

fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs this without `--bench`: then a 200-frame smoke run into
    // a folder of its own, so tests stay quick and never overwrite the bench's figures.
    let benching = std::env::args().any(|a| a == "--bench");
    let frames: u64 = std::env::var("STARS_SOAK_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 100_000 } else { 200 });
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(if benching {
        "target/soak"
    } else {
        "target/soak-smoke"
    });
    let bag = dir.join("bag");
    if bag.exists() {
        std::fs::remove_dir_all(&bag)?;
    }
    std::fs::create_dir_all(&dir)?;
    let soak = soak_driver::run(frames, 1_000, &bag)?;
    soak_driver::check_accounting(&soak);

    let mut csv = String::from("frame,rss_kib,hwm_kib,elapsed_s\n");
    for s in &soak.samples {
        csv += &format!(
            "{},{},{},{:.3}\n",
            s.frame, s.rss_kib, s.hwm_kib, s.elapsed_s
        );
    }
    std::fs::write(dir.join("samples.csv"), csv)?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let points = |f: fn(&soak_driver::Sample) -> u64| {
        soak.samples
            .iter()
            .map(|s| (s.frame as f64, mib(f(s))))
            .collect::<Vec<_>>()
    };
    let top = soak
        .samples
        .iter()
        .map(|s| mib(s.hwm_kib))
        .fold(0.0, f64::max);
    LinePlot {
        title: format!("stars graph soak: {frames} frames, tiny preset"),
        x_label: "frames".into(),
        y_label: "MiB".into(),
        x_range: (0.0, frames as f64),
        y_range: (0.0, top * 1.15),
        series: vec![
            Series {
                label: "VmRSS".into(),
                points: points(|s| s.rss_kib),
            },
            Series {
                label: "VmHWM (peak)".into(),
                points: points(|s| s.hwm_kib),
            },
        ],
        reference: None,
        legend: LegendCorner::LowerRight,
    }
    .save_png(&dir.join("rss.png"), 900, 500)?;

    let warm = (frames / 10).max(1);
    println!("frames: {frames}");
    println!("seconds: {:.1}", soak.seconds);
    println!("frames/s: {:.1}", soak.frames_per_s());
    println!(
        "RSS growth from frame {warm} to {frames}: {:.2}%",
        100.0 * soak.rss_growth_after(warm)
    );
    for s in soak.samples.iter().step_by(10) {
        println!(
            "frame {:>6}: VmRSS {:>7.1} MiB, VmHWM {:>7.1} MiB, {:>7.1} s",
            s.frame,
            mib(s.rss_kib),
            mib(s.hwm_kib),
            s.elapsed_s
        );
    }
    for r in &soak.reports {
        println!(
            "{:>14}: handled {:>7}, dropped {}, errors {}, queue high-water {}",
            r.name,
            r.handled,
            r.total_dropped(),
            r.errors,
            r.high_water
        );
    }
    println!(
        "bag: {} messages in {} ({:.1} MiB)",
        soak.bag.message_count,
        bag.display(),
        std::fs::metadata(bag.join("bag_0.mcap"))?.len() as f64 / (1 << 20) as f64
    );
    Ok(())
}
