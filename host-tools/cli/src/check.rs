//! `kiln check MODEL`: what the model contains and whether kiln supports all of it.

use anyhow::Context;
use kiln_codegen::exec;
use kiln_codegen::import::{onnx, tflite, ImportError};
use kiln_codegen::ir::Graph;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `kiln check`.
#[derive(clap::Args)]
pub struct Args {
    /// The model file (.tflite, .onnx, or a kiln-train .toml with --weights).
    model: PathBuf,
    /// The trained weights of a kiln-train model file (.toml).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
}

/// Prints the model's operators and either "supported" or the full list of problems.
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let file = args.model.display().to_string();
    if crate::model::is_train_model(&args.model) || args.weights.is_some() {
        let graph = crate::model::load(&args.model, args.weights.as_deref())?;
        return report(&file, &graph);
    }
    let bytes = std::fs::read(&args.model).with_context(|| format!("{file}: cannot read"))?;
    let is_onnx = args
        .model
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    let dims = crate::model::dims();
    let imported = if is_onnx {
        onnx::parse_with_dims(&bytes, &file, args.model.parent(), &dims)
    } else if !dims.is_empty() {
        // Refused by the importer: a TFLite model has no named dimensions.
        kiln_codegen::import::load_with_dims(&args.model, &dims)
    } else {
        match tflite::unsupported_operators(&bytes, &file)? {
            items if items.is_empty() => tflite::parse(&bytes, &file),
            items => Err(ImportError::Unsupported {
                file: file.clone(),
                items,
            }),
        }
    };
    let graph = match imported {
        Err(ImportError::Unsupported { items, .. }) => {
            println!("{file}: {} unsupported operator(s):", items.len());
            for u in &items {
                println!("  {u}");
            }
            return Ok(ExitCode::FAILURE);
        }
        other => other?,
    };
    report(&file, &graph)
}

/// Prints the summary and whether every node's kernel can be prepared.
fn report(file: &str, graph: &Graph) -> anyhow::Result<ExitCode> {
    print_summary(file, graph);
    let refused = exec::check(graph)?;
    if refused.is_empty() {
        println!("supported: every operator has a kiln kernel");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{file}: {} operator(s) with quantization kiln's kernels cannot use:",
        refused.len()
    );
    for e in &refused {
        println!("  {e}");
    }
    Ok(ExitCode::FAILURE)
}

fn print_summary(file: &str, graph: &Graph) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for node in &graph.nodes {
        *counts.entry(node.op.name()).or_default() += 1;
    }
    println!(
        "{file}: {} nodes, {} tensors",
        graph.nodes.len(),
        graph.tensors.len()
    );
    for (label, ids) in [("input", &graph.inputs), ("output", &graph.outputs)] {
        for id in ids.iter() {
            let info = graph.info(*id);
            let quant = info
                .scale_zero_point()
                .map(|(s, z)| format!(", scale {s}, zero point {z}"))
                .unwrap_or_default();
            println!(
                "  {label} '{}': {} {:?}{quant}",
                graph.tensor(*id).name,
                info.dtype.name(),
                info.shape
            );
        }
    }
    for (op, n) in counts {
        println!("  {n:>4} x {op}");
    }
}
