//! Metric plots (ROC, PR, PRO) as PNG.
//!
//! plotters draws into an RGB buffer that `image` encodes, so no second `image` version is
//! pulled in. Text uses a DejaVu Sans subset embedded in the binary (`src/viz/fonts/`, with its
//! licence), registered with plotters' `ab_glyph` backend: no system font or fontconfig needed.
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// Line colours in series order (Okabe-Ito, readable by colour-blind viewers).
const COLOURS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// One labelled polyline.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text, e.g. `FlowCLAS (AUROC 0.9493)`.
    pub label: String,
    /// (x, y) points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// A line chart: axes, series, and an optional dashed grey reference (chance level).
#[derive(Clone, Debug)]
pub struct LinePlot {
    /// Caption above the chart.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// X axis range.
    pub x_range: (f64, f64),
    /// Y axis range.
    pub y_range: (f64, f64),
    /// The curves, coloured in order.
    pub series: Vec<Series>,
    /// Drawn dashed grey under the curves.
    pub reference: Option<Series>,
    /// Corner of the legend box (where the curves usually are not).
    pub legend: LegendCorner,
}

/// Where the legend goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegendCorner {
    /// ROC and PRO curves leave this corner empty.
    LowerRight,
    /// Precision-recall curves leave this corner empty.
    LowerLeft,
}

fn register_embedded_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("fonts/DejaVuSans-subset.ttf"),
        )
        .is_ok()
    });
    ok.then_some(())
        .ok_or_else(|| anyhow!("the embedded plot font is invalid"))
}

impl LinePlot {
    /// Renders the chart at `width x height` pixels and writes it as PNG.
    pub fn save_png(&self, path: &Path, width: u32, height: u32) -> Result<()> {
        register_embedded_font()?;
        let mut buf = vec![255u8; width as usize * height as usize * 3];
        self.draw(&mut buf, width, height)
            .map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
        let img = image::RgbImage::from_raw(width, height, buf)
            .context("plot buffer has the wrong size")?;
        img.save(path)
            .with_context(|| format!("writing {}", path.display()))
    }

    fn draw(
        &self,
        buf: &mut [u8],
        width: u32,
        height: u32,
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let decimals = |(lo, hi): (f64, f64)| if hi - lo < 0.5 { 2 } else { 1 };
        let (x_decimals, y_decimals) = (decimals(self.x_range), decimals(self.y_range));
        let root = BitMapBackend::with_buffer(buf, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 26))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(64)
            .build_cartesian_2d(
                self.x_range.0..self.x_range.1,
                self.y_range.0..self.y_range.1,
            )?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 20))
            .light_line_style(RGBColor(235, 235, 235))
            .max_light_lines(4)
            .x_label_formatter(&|x| format!("{x:.x_decimals$}"))
            .y_label_formatter(&|y| format!("{y:.y_decimals$}"))
            .draw()?;
        if let Some(reference) = &self.reference {
            let grey = RGBColor(150, 150, 150);
            chart
                .draw_series(DashedLineSeries::new(
                    reference.points.iter().copied(),
                    8,
                    6,
                    grey.stroke_width(2),
                ))?
                .label(&reference.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(2))
                });
        }
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    thin(&series.points, self.x_range, self.y_range),
                    colour.stroke_width(2),
                ))?
                .label(&series.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(match self.legend {
                LegendCorner::LowerRight => SeriesLabelPosition::LowerRight,
                LegendCorner::LowerLeft => SeriesLabelPosition::LowerLeft,
            })
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    }
}

/// Drops points closer than 1/1000 of the axes to the last kept one: thousands of sub-pixel
/// segments render as a ragged thick line.
fn thin(points: &[(f64, f64)], x: (f64, f64), y: (f64, f64)) -> Vec<(f64, f64)> {
    let (sx, sy) = ((x.1 - x.0) / 1000.0, (y.1 - y.0) / 1000.0);
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (i, &p) in points.iter().enumerate() {
        let far = out
            .last()
            .is_none_or(|q| (p.0 - q.0).abs() > sx || (p.1 - q.1).abs() > sy);
        if far || i + 1 == points.len() {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_with_drawn_curves() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("roc.png");
        LinePlot {
            title: "ROC".into(),
            x_label: "False positive rate".into(),
            y_label: "True positive rate".into(),
            x_range: (0.0, 1.0),
            y_range: (0.0, 1.0),
            series: vec![Series {
                label: "a (AUROC 0.5)".into(),
                points: vec![(0.0, 0.0), (1.0, 1.0)],
            }],
            reference: None,
            legend: LegendCorner::LowerRight,
        }
        .save_png(&path, 320, 240)
        .unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (320, 240));
        assert!(
            img.pixels().any(|p| p.0 == [0, 114, 178]),
            "no curve pixels"
        );
        assert!(img.pixels().any(|p| p.0 == [0, 0, 0]), "no text or axes");
    }
}
