//! The training-curve SVG: loss (left axis) and accuracies (right axis) per epoch,
//! written by hand (a few lines of markup, no plotting dependency).

use crate::train::EpochStats;
use std::fmt::Write;

/// An SVG drawing of the training loss and the train/test accuracy per epoch.
pub fn training_curve(title: &str, history: &[EpochStats]) -> String {
    let (w, h, m) = (640.0, 360.0, 50.0);
    let n = history.len().max(1);
    let x = |e: usize| {
        m + (w - 2.0 * m)
            * if n > 1 {
                (e - 1) as f64 / (n - 1) as f64
            } else {
                0.5
            }
    };
    let max_loss = history
        .iter()
        .map(|s| f64::from(s.loss))
        .fold(1e-6, f64::max);
    let y_loss = |l: f64| h - m - (h - 2.0 * m) * (l / max_loss);
    let y_acc = |a: f64| h - m - (h - 2.0 * m) * a;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
        w / 2.0,
        escape(title)
    );
    let _ = writeln!(
        s,
        r##"<path d="M{m} {m} V{} H{}" fill="none" stroke="#444"/><line x1="{}" y1="{m}" x2="{}" y2="{}" stroke="#444"/>"##,
        h - m,
        w - m,
        w - m,
        w - m,
        h - m
    );
    for k in 0..=4 {
        let f = k as f64 / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{:.3}</text>"#,
            m - 4.0,
            y_acc(f) + 4.0,
            max_loss * f
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{:.0}%</text>"#,
            w - m + 4.0,
            y_acc(f) + 4.0,
            f * 100.0
        );
    }
    for st in history {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            x(st.epoch),
            h - m + 16.0,
            st.epoch
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">epoch</text>"#,
        w / 2.0,
        h - 12.0
    );
    let mut line = |points: Vec<(f64, f64)>, color: &str, label: &str, row: usize| {
        let d: Vec<String> = points
            .iter()
            .map(|(a, b)| format!("{a:.1},{b:.1}"))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            d.join(" ")
        );
        for (a, b) in &points {
            let _ = writeln!(
                s,
                r#"<circle cx="{a:.1}" cy="{b:.1}" r="3" fill="{color}"/>"#
            );
        }
        let ly = 40.0 + 16.0 * row as f64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{ly}" fill="{color}">{label}</text>"#,
            m + 10.0
        );
    };
    line(
        history
            .iter()
            .map(|e| (x(e.epoch), y_loss(f64::from(e.loss))))
            .collect(),
        "#d62728",
        "training loss (left)",
        0,
    );
    line(
        history
            .iter()
            .map(|e| (x(e.epoch), y_acc(e.train_accuracy)))
            .collect(),
        "#1f77b4",
        "training accuracy (right)",
        1,
    );
    let test: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|e| e.test_accuracy.map(|a| (x(e.epoch), y_acc(a))))
        .collect();
    if !test.is_empty() {
        line(test, "#2ca02c", "test accuracy (right)", 2);
    }
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
