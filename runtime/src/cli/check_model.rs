//! `runtime check-model`: what `builder serve-image --embed-model` runs to refuse a bad model.
//! Every engine this binary and image have loads the model and runs it once on zeros; the model
//! passes when at least one engine can serve it.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use super::CheckModelArgs;
use crate::engine::{self, ComputePrecision, EngineChoice, EngineKind, LoadOptions, Loaded};
use crate::models::{find_latest_version, model_dir, Optimization};
use crate::signature::ServingSignature;

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
    println!("Model: {}", path.display());
    let engines = match args.engine {
        EngineChoice::Tract => vec![EngineKind::Tract],
        EngineChoice::Onnxruntime => {
            engine::onnxruntime::init(args.onnxruntime_library.as_deref())
                .map_err(|why| anyhow::anyhow!("--engine onnxruntime, but {why}"))?;
            vec![EngineKind::Onnxruntime]
        }
        EngineChoice::Openvino => {
            engine::openvino::init(args.openvino_library.as_deref())
                .map_err(|why| anyhow::anyhow!("--engine openvino, but {why}"))?;
            vec![EngineKind::Openvino]
        }
        EngineChoice::Auto => {
            if let Err(why) = engine::onnxruntime::init(args.onnxruntime_library.as_deref()) {
                println!("onnxruntime: not available ({why})");
            }
            // Only said when it was meant to be there: most images carry no OpenVINO.
            if let Err(why) = engine::openvino::init(args.openvino_library.as_deref()) {
                if engine::openvino::expected(args.openvino_library.as_deref()) {
                    println!("OpenVINO: not available ({why})");
                }
            }
            engine::available()
        }
    };
    let batch = args.batch.max(1);
    // Each engine loads the model as serving would: in the precision it was optimized for.
    let optimization = Optimization::load(&path)?;
    let opts = LoadOptions {
        compute_precision: optimization
            .as_ref()
            .map_or(ComputePrecision::F32, Optimization::compute_precision),
        ..LoadOptions::default()
    };
    let made_on = optimization.as_ref().and_then(Optimization::engine);
    // What the engine the variant was made on computes it in, if that engine loaded it.
    let mut computes = ComputePrecision::F32;
    let mut served = None;
    let mut failures = Vec::new();
    for kind in engines {
        match check_with(kind, &path, batch, &opts) {
            Ok(loaded) => {
                if made_on == Some(kind) {
                    computes = loaded.backend.compute_precision();
                }
                served.get_or_insert(loaded);
            }
            Err(e) => {
                println!("{kind}: cannot serve it: {e:#}");
                failures.push(format!("{kind}: {e:#}"));
            }
        }
    }
    let loaded = served.with_context(|| {
        format!(
            "{} cannot be served: {}",
            path.display(),
            failures.join("; ")
        )
    })?;
    let signature = loaded.backend.signature();
    println!("Inputs:");
    for spec in &signature.inputs {
        println!("  {spec}");
    }
    println!("Outputs:");
    for spec in &signature.outputs {
        println!("  {spec}");
    }
    if let Some(serving) = ServingSignature::load(&path, signature)? {
        println!("Serving signature ({}):", serving.file.display());
        for spec in &serving.public.inputs {
            println!("  input  {spec}");
        }
        for spec in &serving.public.outputs {
            println!("  output {spec}");
        }
    }
    if let Some(o) = &optimization {
        match o.served_precision(computes) {
            precision if precision == o.precision => {
                println!("Precision: {precision} ({})", o.describe())
            }
            precision => println!(
                "Precision: {precision} here: the {} variant computes in {} only on {}, on a CPU \
                 with AMX-BF16 or AVX512-BF16 ({})",
                o.variant,
                o.precision,
                made_on.map_or("its engine".to_string(), |kind| kind.to_string()),
                o.describe()
            ),
        }
    }
    println!("OK");
    Ok(())
}

/// Loads `path` with one engine and runs it on zeros at `batch`; prints the figures and verdict.
/// A model that zeros may not fit (free dimensions beyond the batch) passes on loading alone.
fn check_with(kind: EngineKind, path: &Path, batch: usize, opts: &LoadOptions) -> Result<Loaded> {
    let loaded = engine::load(kind, path, opts)?;
    let mut runner = loaded.backend.runner().map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let signature = loaded.backend.signature();
    let outputs = match runner.run(signature.zero_inputs(batch)) {
        Ok(outputs) => outputs,
        Err(e) if engine::zeros_may_not_fit(signature) => {
            println!(
                "{kind}: load + optimize {:.1} ms: OK (the test run on zeros failed: {e}; the \
                 model has free dimensions beyond the batch, which zeros of size 1 may not fit)",
                engine::ms(loaded.load_time)
            );
            return Ok(loaded);
        }
        Err(e) => anyhow::bail!("its test run on zeros (batch {batch}) failed: {e}"),
    };
    let shapes: Vec<String> = outputs.iter().map(|t| format!("{:?}", t.shape())).collect();
    println!(
        "{kind}: load + optimize + warm-up {:.1} ms, test run (batch {batch}, zeros) {:.1} ms, \
         output shapes {}: OK",
        engine::ms(loaded.load_time),
        engine::ms(started.elapsed()),
        shapes.join(" ")
    );
    Ok(loaded)
}
