//! The latency distributions as an SVG line plot, written by hand (xtask stays light): latency
//! (log scale) against percentile on the "nines" scale (50, 90, 99, 99.9, 99.99), as
//! HdrHistogram plots show them, so that tails are as visible as medians. gRPC unary calls,
//! at the same rate on one core, are dashed, in the colour of the same path's HTTP/1.1 line.
use super::summary::Summary;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// The highest percentile plotted is 99.99: four nines.
const NINES: f64 = 4.0;
const COLOURS: [&str; 6] = [
    "#444444", "#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd",
];

/// One line: its legend, its points, its colour, and whether it is dashed.
struct Series<'a> {
    title: String,
    distribution: &'a [[f64; 2]],
    colour: &'static str,
    dashed: bool,
}

fn series(summary: &Summary) -> Vec<Series<'_>> {
    let colour = |index: usize| COLOURS[index % COLOURS.len()];
    let mut all: Vec<Series> = summary
        .rows
        .iter()
        .enumerate()
        .map(|(index, row)| Series {
            title: row.title.clone(),
            distribution: &row.distribution,
            colour: colour(index),
            dashed: false,
        })
        .collect();
    all.extend(summary.grpc.iter().map(|grpc| {
        let index = summary.rows.iter().position(|row| row.name == grpc.name);
        Series {
            title: format!("gRPC, {}", summary.title(&grpc.name)),
            distribution: &grpc.distribution,
            colour: colour(index.unwrap_or(summary.rows.len())),
            dashed: true,
        }
    }));
    all
}

pub fn latency_distributions(summary: &Summary) -> String {
    let series = series(summary);
    let values = series
        .iter()
        .flat_map(|line| line.distribution.iter().map(|point| point[1]))
        .filter(|v| *v > 0.0);
    let (low, high) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    // Whole decades around the data, so the ticks fall on 10, 100, 1000 µs...
    let (low, high) = if high > 0.0 {
        (
            low.log10().floor(),
            high.log10().ceil().max(low.log10().floor() + 1.0),
        )
    } else {
        (0.0, 1.0)
    };
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x = |percentile: f64| {
        let nines = -(1.0 - percentile / 100.0).max(1e-9).log10();
        LEFT + nines.min(NINES) / NINES * plot_width
    };
    let y = |micros: f64| TOP + (high - micros.max(1e-3).log10()) / (high - low) * plot_height;

    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"15\">Latency at 1,000 requests/s, every process on one core{}</text>\n",
        if summary.quick { " (quick run)" } else { "" }
    );
    for decade in (low as i32)..=(high as i32) {
        let micros = 10f64.powi(decade);
        let at = y(micros);
        svg += &format!(
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{at:.1}\" y2=\"{at:.1}\" stroke=\"#dddddd\"/>\n\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            LEFT + plot_width,
            LEFT - 6.0,
            at + 4.0,
            micros_label(micros)
        );
    }
    for percentile in [0.0, 90.0, 99.0, 99.9, 99.99] {
        let at = x(percentile);
        svg += &format!(
            "<line x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{TOP}\" y2=\"{}\" stroke=\"#dddddd\"/>\n\
             <text x=\"{at:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            TOP + plot_height,
            TOP + plot_height + 18.0,
            if percentile == 0.0 {
                "min".to_owned()
            } else {
                format!("p{percentile}")
            }
        );
    }
    svg += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">percentile</text>\n\
         <text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">latency (µs, log scale)</text>\n",
        LEFT + plot_width / 2.0,
        HEIGHT - 10.0,
        TOP + plot_height / 2.0,
        TOP + plot_height / 2.0,
    );
    for (index, line) in series.iter().enumerate() {
        let colour = line.colour;
        let dash = if line.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let points: Vec<String> = line
            .distribution
            .iter()
            .map(|[percentile, micros]| format!("{:.1},{:.1}", x(*percentile), y(*micros)))
            .collect();
        let legend_y = TOP + 20.0 + index as f64 * 22.0;
        let legend_x = LEFT + plot_width + 16.0;
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n\
             <line x1=\"{legend_x}\" x2=\"{}\" y1=\"{legend_y}\" y2=\"{legend_y}\" stroke=\"{colour}\" stroke-width=\"3\"{dash}/>\n\
             <text x=\"{}\" y=\"{}\">{}</text>\n",
            points.join(" "),
            legend_x + 22.0,
            legend_x + 28.0,
            legend_y + 4.0,
            line.title
        );
    }
    svg += "</svg>\n";
    svg
}

fn micros_label(micros: f64) -> String {
    if micros >= 1000.0 {
        format!("{} ms", micros / 1000.0)
    } else {
        format!("{micros} µs")
    }
}
