//! `runtime check-model`: what `builder serve-image --embed-model` runs to refuse a bad model.

use std::time::Instant;

use anyhow::{Context, Result};

use crate::config::{model_dir, CheckModelArgs};
use crate::model::{find_latest_version, load_onnx, zero_inputs, ServingSignature};

pub fn check_model(args: &CheckModelArgs) -> Result<()> {
    let given = match &args.path {
        Some(path) => path.clone(),
        None => model_dir(&args.model_base_path, &args.model_name),
    };
    let path = if given.is_dir() {
        find_latest_version(&given)?.path
    } else if given.is_file() {
        given
    } else {
        anyhow::bail!(
            "{} does not exist: give an .onnx file or a model folder",
            given.display()
        );
    };
    let loaded =
        load_onnx(&path).with_context(|| format!("{} cannot be served", path.display()))?;
    println!("Model: {}", path.display());
    println!(
        "Load + optimize: {:.1} ms",
        loaded.load_time.as_secs_f64() * 1000.0
    );
    println!("Inputs:");
    for spec in &loaded.signature.inputs {
        println!("  {spec}");
    }
    println!("Outputs:");
    for spec in &loaded.signature.outputs {
        println!("  {spec}");
    }
    if let Some(serving) = ServingSignature::load(&path, &loaded.signature)? {
        println!("Serving signature ({}):", serving.file.display());
        for spec in &serving.public.inputs {
            println!("  input  {spec}");
        }
        for spec in &serving.public.outputs {
            println!("  output {spec}");
        }
    }
    let inputs =
        zero_inputs(&loaded.signature, args.batch.max(1)).context("cannot build test inputs")?;
    let started = Instant::now();
    let outputs = loaded
        .plan
        .for_batch(Some(args.batch.max(1)))
        .run(inputs)
        .map_err(|e| anyhow::anyhow!("{} failed its test run on zeros: {e:#}", path.display()))?;
    let shapes: Vec<String> = outputs.iter().map(|t| format!("{:?}", t.shape())).collect();
    println!(
        "Test run (batch {}, zeros): {:.1} ms, output shapes {}",
        args.batch.max(1),
        started.elapsed().as_secs_f64() * 1000.0,
        shapes.join(" ")
    );
    println!("OK");
    Ok(())
}
