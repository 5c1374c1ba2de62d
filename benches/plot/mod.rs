//! SVG charts of a harness's results, written by the harness itself (`--plot
//! <file.svg>`) so the figures in `docs/bench/` are what a run measured. Plain
//! SVG 1.1 text: no plotting dependency for two kinds of chart.

use std::fmt::Write as _;

/// A line chart (x numeric) or a grouped bar chart (one group per category).
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    /// Bar groups, named; empty for a line chart.
    pub categories: Vec<String>,
    pub series: Vec<Series>,
}

/// One series: its points (x, y); for bars x is the category's index.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

/// A round step for about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
}

fn label(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart as an SVG document.
pub fn svg(chart: &Chart) -> String {
    let bars = !chart.categories.is_empty();
    let ys = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1));
    let y_max = ys.fold(0.0f64, f64::max);
    let y_step = tick_step(y_max);
    let y_top = (y_max / y_step).ceil().max(1.0) * y_step;
    let xs = || {
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
    };
    let (x_min, x_max) = if bars {
        (-0.5, chart.categories.len() as f64 - 0.5)
    } else {
        let min = xs().fold(f64::INFINITY, f64::min).min(0.0);
        let max = xs().fold(f64::NEG_INFINITY, f64::max).max(min + 1.0);
        (min, max)
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * plot_w;
    let py = |y: f64| TOP + plot_h - y / y_top * plot_h;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(chart.title)
    );
    // Horizontal grid with the y ticks.
    let mut y = 0.0;
    while y <= y_top + y_step / 2.0 {
        let (right, at, text_x) = (LEFT + plot_w, py(y), LEFT - 6.0);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{right}" y1="{at:.1}" y2="{at:.1}" stroke="#ddd"/><text x="{text_x}" y="{:.1}" text-anchor="end">{}</text>"##,
            at + 4.0,
            label(y)
        );
        y += y_step;
    }
    if bars {
        for (i, c) in chart.categories.iter().enumerate() {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                px(i as f64),
                TOP + plot_h + 18.0,
                escape(c)
            );
        }
        let group_w = plot_w / chart.categories.len() as f64 * 0.7;
        let bar_w = group_w / chart.series.len().max(1) as f64;
        for (s, series) in chart.series.iter().enumerate() {
            for &(x, y) in &series.points {
                let left = px(x) - group_w / 2.0 + s as f64 * bar_w;
                let _ = writeln!(
                    out,
                    r#"<rect x="{left:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"#,
                    py(y),
                    bar_w - 2.0,
                    py(0.0) - py(y),
                    COLORS[s % COLORS.len()],
                    left + bar_w / 2.0 - 1.0,
                    py(y) - 4.0,
                    label((y * 10.0).round() / 10.0)
                );
            }
        }
    } else {
        let x_step = tick_step(x_max - x_min);
        let mut x = (x_min / x_step).ceil() * x_step;
        while x <= x_max + x_step / 100.0 {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                px(x),
                TOP + plot_h + 18.0,
                label(x)
            );
            x += x_step;
        }
        for (s, series) in chart.series.iter().enumerate() {
            let points: Vec<String> = series
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                COLORS[s % COLORS.len()],
                points.join(" ")
            );
        }
    }
    // Axes, their labels and the legend.
    let _ = writeln!(
        out,
        r#"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{0}" stroke="black"/><line x1="{LEFT}" x2="{1}" y1="{0}" y2="{0}" stroke="black"/>"#,
        TOP + plot_h,
        LEFT + plot_w
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 16.0,
        escape(chart.x_label)
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + plot_h / 2.0,
        escape(chart.y_label)
    );
    for (s, series) in chart.series.iter().enumerate() {
        let y = TOP + 10.0 + 20.0 * s as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            WIDTH - RIGHT + 16.0,
            y - 10.0,
            COLORS[s % COLORS.len()],
            WIDTH - RIGHT + 34.0,
            y,
            escape(&series.name)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Writes the chart to the file given as `--plot <file>`, if any.
pub fn write_if_asked(chart: &Chart) {
    let args: Vec<String> = std::env::args().collect();
    if let Some(path) = args.windows(2).find(|w| w[0] == "--plot").map(|w| &w[1]) {
        std::fs::write(path, svg(chart)).expect("plot file");
        println!("plot: {path}");
    }
}
