//! Charts drawn as SVG on the server: readable without JavaScript, styled
//! by the stylesheet, every label escaped by maud. Hand-written because a
//! horizontal bar chart is a few rectangles; a plotting crate would bring
//! fonts and a raster stack the dashboard does not need.

use maud::{html, Markup};

/// Bar height and gap, in SVG units.
const BAR: u32 = 18;
const GAP: u32 = 6;
/// Room for the labels left of the bars, and the chart's width.
const LABEL_W: u32 = 150;
const WIDTH: u32 = 480;

/// A horizontal bar chart of `(label, value)` with an accessible title; the
/// same numbers follow as a table for screen readers and for copying.
pub fn bars(title: &str, rows: &[(String, u64)]) -> Markup {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let height = rows.len() as u32 * (BAR + GAP) + GAP;
    let span = WIDTH - LABEL_W - 70;
    html! {
        figure.chart {
            figcaption { (title) }
            @if rows.is_empty() {
                p.empty { "Nothing yet." }
            } @else {
                svg role="img" aria-label=(title) viewBox={"0 0 " (WIDTH) " " (height)} width=(WIDTH) height=(height)
                    xmlns="http://www.w3.org/2000/svg" {
                    @for (i, (label, value)) in rows.iter().enumerate() {
                        @let y = GAP + i as u32 * (BAR + GAP);
                        @let w = ((*value as f64 / max as f64) * span as f64).round().max(1.0) as u32;
                        text.label x=(LABEL_W - 8) y=(y + BAR - 5) text-anchor="end" { (truncate(label, 22)) }
                        rect.bar x=(LABEL_W) y=(y) width=(w) height=(BAR) rx="2" {
                            title { (label) ": " (value) }
                        }
                        text.value x=(LABEL_W + w + 6) y=(y + BAR - 5) { (value) }
                    }
                }
                details {
                    summary { "As a table" }
                    table {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Devices" } } }
                        tbody {
                            @for (label, value) in rows { tr { td { (label) } td.num { (value) } } }
                        }
                    }
                }
            }
        }
    }
}

/// A progress bar of `done` out of `total`, with its numbers in words.
pub fn progress(label: &str, done: u64, total: u64) -> Markup {
    let pct = if total == 0 { 0.0 } else { done as f64 * 100.0 / total as f64 };
    html! {
        span.progress {
            progress max=(total.max(1)) value=(done) aria-label=(label) {}
            " " (done) " of " (total) " (" (format!("{pct:.0}")) "%)"
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_bars_scale() {
        let svg = bars("By release", &[("<b>fw</b>".into(), 10), ("other".into(), 5)]).into_string();
        assert!(svg.contains("&lt;b&gt;fw&lt;/b&gt;") && !svg.contains("<b>"));
        assert!(svg.contains(r#"width="260""#) && svg.contains(r#"width="130""#), "{svg}");
        assert!(bars("Empty", &[]).into_string().contains("Nothing yet."));
    }
}
