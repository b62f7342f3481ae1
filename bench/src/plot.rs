//! One kind of chart, drawn to a PNG, alone or stacked: a value over time, one line
//! per series, a shaded span (the outage) and a dashed threshold. Text is drawn with DejaVu Sans from the
//! system (Debian's fonts-dejavu-core), registered with plotters' built-in
//! TrueType renderer: no font service, no C library.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// Where Debian's fonts-dejavu-core puts the font.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

const COLOURS: [RGBColor; 4] = [
    RGBColor(0, 114, 178),   // blue: hostbeat, always first
    RGBColor(213, 94, 0),    // vermilion
    RGBColor(0, 158, 115),   // green
    RGBColor(204, 121, 167), // purple
];

/// One series: `(minutes, rate)` points.
pub struct Line {
    /// What the legend says.
    pub label: String,
    /// `(minutes, rate)`, in order.
    pub points: Vec<(f64, f64)>,
}

/// What to draw.
pub struct Chart {
    /// The caption.
    pub title: String,
    /// What the vertical axis shows.
    pub y_desc: String,
    /// A span of minutes to shade.
    pub shaded: (f64, f64),
    /// What the shaded span is.
    pub shaded_label: String,
    /// A rate to mark with a dashed line, and its label.
    pub threshold: Option<(f64, String)>,
    /// The series; the first is drawn in blue (hostbeat's colour).
    pub lines: Vec<Line>,
}

/// Draws `charts` to `path`, one above the other (1200 pixels wide, 650 high
/// each).
pub fn over_time(path: &Path, charts: &[Chart]) -> Result<(), String> {
    load_font()?;
    let high = 650 * u32::try_from(charts.len().max(1)).unwrap_or(1);
    let root = BitMapBackend::new(path, (1200, high)).into_drawing_area();
    let result = root.fill(&WHITE).map_err(Into::into).and_then(|()| {
        for (area, chart) in root
            .split_evenly((charts.len().max(1), 1))
            .iter()
            .zip(charts)
        {
            draw(area, chart)?;
        }
        root.present()?;
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    result.map_err(|e| format!("cannot draw {}: {e}", path.display()))
}

fn load_font() -> Result<(), String> {
    let bytes = std::fs::read(FONT)
        .map_err(|e| format!("cannot read {FONT} ({e}): install the fonts-dejavu-core package"))?;
    // plotters keeps fonts for the life of the process.
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| format!("{FONT} is not a font plotters can read"))
}

fn draw(
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    chart: &Chart,
) -> Result<(), Box<dyn std::error::Error>> {
    let x_end = chart
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let y_end = chart
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .chain(chart.threshold.iter().map(|t| t.0))
        .fold(1.0, f64::max)
        * 1.1;
    let mut plot = ChartBuilder::on(root)
        .caption(&chart.title, ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_end, 0.0..y_end)?;
    plot.configure_mesh()
        .x_desc("minutes (virtual time)")
        .y_desc(chart.y_desc.as_str())
        .light_line_style(WHITE)
        .draw()?;
    plot.draw_series(std::iter::once(Rectangle::new(
        [(chart.shaded.0, 0.0), (chart.shaded.1, y_end)],
        RGBColor(230, 230, 230).filled(),
    )))?
    .label(chart.shaded_label.as_str())
    .legend(|(x, y)| {
        Rectangle::new(
            [(x, y - 6), (x + 20, y + 6)],
            RGBColor(230, 230, 230).filled(),
        )
    });
    if let Some((rate, label)) = &chart.threshold {
        plot.draw_series(DashedLineSeries::new(
            [(0.0, *rate), (x_end, *rate)],
            8,
            6,
            BLACK.stroke_width(1),
        ))?
        .label(label.as_str())
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
    }
    for (line, colour) in chart.lines.iter().zip(COLOURS.iter().cycle()) {
        plot.draw_series(LineSeries::new(
            line.points.iter().copied(),
            colour.stroke_width(2),
        ))?
        .label(line.label.as_str())
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    plot.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    Ok(())
}
