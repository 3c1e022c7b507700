//! `kiln inspect MODEL [--plot plan.svg]`: the memory plan, step by step, and a picture
//! of it (time across, arena address up) so the peak is easy to see.

use kiln_codegen::compile::{optimize_and_plan, CompileOptions};
use kiln_codegen::ir::Graph;
use kiln_codegen::plan::{intervals, report, Interval, Plan};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `kiln inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The model file (.tflite or .onnx).
    model: PathBuf,
    /// Write the memory plan as an SVG picture to this file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Plan without in-place execution (to see what it saves).
    #[arg(long)]
    no_in_place: bool,
}

/// Prints the plan per step and optionally writes the picture.
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let file = args.model.display().to_string();
    let graph = crate::model::import(&args.model)?;
    let mut options = CompileOptions::default();
    options.plan.in_place = !args.no_in_place;
    let planned = optimize_and_plan(graph, &options, &file)?;
    let (graph, plan) = (&planned.graph, &planned.plan);
    println!(
        "{:>4} {:<18} {:>10} {:>8} {:>10}  name",
        "step", "op", "offset", "bytes", "live"
    );
    for r in report(plan, graph) {
        let name: String = r.name.chars().take(48).collect();
        let place = match r.location {
            kiln_codegen::plan::Location::Arena(off) => off.to_string(),
            other => format!("{other:?}"),
        };
        println!(
            "{:>4} {:<18} {:>10} {:>8} {:>10}  {name}",
            r.step, r.op, place, r.bytes, r.live_bytes
        );
    }
    println!(
        "arena bytes: {} (lower bound for this order {}, best order found {})",
        plan.arena_bytes, plan.lower_bound_bytes, plan.best_order_bound_bytes
    );
    if let Some(path) = &args.plot {
        let svg = plot(graph, plan, &file);
        std::fs::write(path, svg).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// An SVG of the plan: each arena tensor a rectangle from the step that writes it to the
/// last step that reads it, at its offset and size; the peak step is marked.
pub fn plot(graph: &Graph, plan: &Plan, title: &str) -> String {
    let boxes: Vec<Interval> = intervals(plan, graph);
    let steps = plan.order.len().max(1);
    let top = plan.arena_bytes.max(1) as f64;
    let (left, right, up, down, width, height) = (80.0, 20.0, 40.0, 50.0, 900.0, 480.0);
    let x = |step: f64| left + step / steps as f64 * (width - left - right);
    let y = |bytes: f64| height - down - bytes / top * (height - up - down);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="20" font-size="13">{} — arena {} bytes (lower bound {})</text>"#,
        escape(title),
        plan.arena_bytes,
        plan.lower_bound_bytes
    );
    for (i, b) in boxes.iter().enumerate() {
        let (x0, x1) = (x(b.first_step as f64), x(b.last_step as f64 + 1.0));
        let (y1, y0) = (y(b.offset as f64), y((b.offset + b.size) as f64));
        let hue = (i * 67) % 360;
        let name = escape(&graph.tensor(b.tensor).name);
        let _ = writeln!(
            s,
            r#"<rect x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" fill="hsl({hue},60%,70%)" stroke="black" stroke-width="0.5"><title>{name}: {} bytes at {}, steps {}..{}</title></rect>"#,
            (x1 - x0).max(1.0),
            (y1 - y0).max(1.0),
            b.size,
            b.offset,
            b.first_step,
            b.last_step
        );
    }
    if let Some((peak, _)) = plan
        .live_bytes
        .iter()
        .enumerate()
        .max_by_key(|(i, v)| (**v, usize::MAX - i))
    {
        let px = x(peak as f64 + 0.5);
        let _ = writeln!(
            s,
            r#"<line x1="{px:.1}" y1="{up}" x2="{px:.1}" y2="{}" stroke="red" stroke-dasharray="4 3"/>"#,
            height - down
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" fill="red">peak at step {peak}</text>"#,
            px + 4.0,
            up + 12.0
        );
    }
    // Axes.
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        height - down,
        width - right,
        height - down
    );
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{up}" x2="{left}" y2="{}" stroke="black"/>"#,
        height - down
    );
    for step in 0..steps {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{step}</text>"#,
            x(step as f64 + 0.5),
            height - down + 14.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">step (op order)</text>"#,
        (left + width - right) / 2.0,
        height - 12.0
    );
    for k in 0..=4 {
        let bytes = top * k as f64 / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{:.0}</text>"#,
            left - 6.0,
            y(bytes) + 4.0,
            bytes
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">arena offset (bytes)</text>"#,
        height / 2.0,
        height / 2.0
    );
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
