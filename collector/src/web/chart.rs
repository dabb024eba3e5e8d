//! Trend charts as inline SVG, drawn on the server: no script, no external asset. The SVG holds
//! only numbers we computed, never text from agents, so it is safe to embed unescaped.

use std::fmt::Write;

/// A line of pass rates (0..=1) over days; days without data break the line.
pub fn line(points: &[Option<f64>], width: u32, height: u32, axes: bool) -> String {
    let pad = if axes { 28.0 } else { 2.0 };
    let (w, h) = (f64::from(width), f64::from(height));
    let step = if points.len() > 1 {
        (w - pad - 2.0) / (points.len() - 1) as f64
    } else {
        0.0
    };
    let y =
        |rate: f64| 2.0 + (1.0 - rate.clamp(0.0, 1.0)) * (h - 4.0 - if axes { 12.0 } else { 0.0 });
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">"#
    );
    if axes {
        for (rate, label) in [(1.0, "100%"), (0.5, "50%"), (0.0, "0%")] {
            let _ = write!(
                svg,
                r##"<line x1="{pad}" x2="{w}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="0" y="{ty:.1}" font-size="9" fill="#666">{label}</text>"##,
                y = y(rate),
                ty = y(rate) + 3.0
            );
        }
    }
    let mut segment: Vec<String> = Vec::new();
    let flush = |segment: &mut Vec<String>, svg: &mut String| {
        if segment.len() == 1 {
            let _ = write!(
                svg,
                r##"<circle cx="{}" r="2" fill="#1a7f37"/>"##,
                segment[0].replace(',', r#"" cy=""#)
            );
        } else if segment.len() > 1 {
            let _ = write!(
                svg,
                r##"<polyline fill="none" stroke="#1a7f37" stroke-width="1.5" points="{}"/>"##,
                segment.join(" ")
            );
        }
        segment.clear();
    };
    for (i, point) in points.iter().enumerate() {
        match point {
            Some(rate) => segment.push(format!("{:.1},{:.1}", pad + i as f64 * step, y(*rate))),
            None => flush(&mut segment, &mut svg),
        }
    }
    flush(&mut segment, &mut svg);
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_break_the_line_and_rates_map_to_height() {
        let svg = line(&[Some(1.0), Some(0.0), None, Some(0.5)], 100, 20, false);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 1, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 1, "{svg}");
        assert!(svg.contains("2.0,2.0"), "100% at the top: {svg}");
        assert!(line(&[None, None], 100, 20, true).contains("100%"));
    }
}
