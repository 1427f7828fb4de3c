//! Loading one model version: the engine chosen and warmed up (`engine`), its signature file
//! read (`signature`), its worker pool started (`pool`): what the model manager runs for each
//! version it loads.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use tracing::{info, warn};

use super::layout::ModelVersion;
use super::optimization::Optimization;
use super::state::ServedModel;
use crate::engine::{self, BatchSupport, ComputePrecision, EngineChoice, LoadOptions, Threads};
use crate::pool::{Batching, InferencePool};
use crate::signature::ServingSignature;

/// Says that a version is loaded, with its engine, workers and signature.
pub fn log_loaded(model: &ServedModel) {
    info!(
        "Successfully loaded servable version {{name: {} version: {}}} in {:.0} ms \
         (engine {}, {} inference worker(s))",
        model.name,
        model.version,
        model.load_time.as_secs_f64() * 1000.0,
        model.engine,
        model.workers
    );
    for spec in &model.signature.inputs {
        info!("  input  {spec}");
    }
    for spec in &model.signature.outputs {
        info!("  output {spec}");
    }
    if let Some(serving) = &model.serving {
        info!("Serving signature from {}:", serving.file.display());
        for spec in &serving.public.inputs {
            info!(
                "  input  {spec} (an image: {{\"b64\": JPEG or PNG}} or [height, width, 3] of 0-1)"
            );
        }
        for spec in &serving.public.outputs {
            info!("  output {spec}");
        }
    }
}

/// How a model is loaded and its runs scheduled.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// Inference threads (runs that may proceed at once); None: what the engine suggests for
    /// `cores`.
    pub workers: Option<usize>,
    /// Cores this process may use.
    pub cores: usize,
    /// Requests that may wait for a worker.
    pub queue: usize,
    pub batching: Option<Batching>,
    pub engine: EngineChoice,
    pub threads: Threads,
    pub ort_spinning: bool,
    /// The name metrics label this model's runs with.
    pub model_name: String,
}

impl PoolOptions {
    /// `workers` threads, a queue of `queue`, no batching, one intra-op thread, the faster
    /// engine.
    pub fn new(workers: usize, queue: usize) -> PoolOptions {
        PoolOptions {
            workers: Some(workers),
            cores: workers,
            queue,
            batching: None,
            engine: EngineChoice::Auto,
            threads: Threads::Fixed(1),
            ort_spinning: false,
            model_name: String::new(),
        }
    }
}

/// Loads the model with the chosen engine (optimize, warm up, choose the threads), reads its
/// signature file, and starts its workers.
pub fn load_and_warm_up(found: &ModelVersion, pool: &PoolOptions) -> Result<ServedModel> {
    let started = Instant::now();
    let optimization = Optimization::load(&found.path)?.map(Arc::new);
    if let Some(o) = &optimization {
        info!("{}", o.describe());
    }
    let opts = LoadOptions {
        batch_sizes: pool
            .batching
            .as_ref()
            .map_or_else(Vec::new, |b| b.allowed_batch_sizes.clone()),
        // The threads follow the load as for any model (timed here, on the serving host's
        // cores): the optimizer's own times, taken with onnxruntime's spinning Python
        // sessions, chose two threads a worker where the runtime's own timing keeps one each
        // plus a lone-request session.
        threads: pool.threads,
        ort_spinning: pool.ort_spinning,
        compute_precision: optimization
            .as_deref()
            .map_or(ComputePrecision::F32, Optimization::compute_precision),
    };
    let loaded = load_engine(found, optimization.as_deref(), pool.engine, &opts)?;
    for note in &loaded.notes {
        info!("{note}");
    }
    let backend = loaded.backend;
    if pool.batching.is_some() && backend.batch_support() == BatchSupport::None {
        warn!(
            "--enable_batching has no effect on this model: its batch dimension is fixed, an \
             output does not keep it first, or the run at load that checks it failed"
        );
    }
    let signature = backend.signature().clone();
    let serving = ServingSignature::load(&found.path, &signature)?.map(Arc::new);
    let workers = pool
        .workers
        .unwrap_or_else(|| backend.default_workers(pool.cores));
    let engine = backend.kind();
    let compute_precision = backend.compute_precision();
    // (Served by another engine than the one it was made on: load_engine has warned.)
    let made_on = optimization.as_deref().and_then(Optimization::engine);
    if opts.compute_precision != compute_precision && made_on == Some(engine) {
        warn!(
            "This version was optimized to compute in {} on its build host, but {engine} \
             computes it in {compute_precision} on this CPU (bf16 pays only with AMX-BF16 or \
             AVX512-BF16): it answers as the fp32 model does, at fp32's speed",
            opts.compute_precision
        );
    }
    let batch_sizes = pool
        .batching
        .as_ref()
        .map(|_| crate::metrics::metrics().batch_sizes(&pool.model_name));
    let name = pool.model_name.clone();
    let pool = InferencePool::start(
        backend.clone(),
        workers,
        pool.queue,
        pool.batching.clone(),
        batch_sizes,
    )
    .map_err(anyhow::Error::msg)?;
    Ok(ServedModel {
        name,
        version: found.version,
        path: found.path.clone(),
        signature,
        serving,
        pool,
        engine,
        workers,
        load_time: started.elapsed(),
        optimization,
        compute_precision,
    })
}

/// The engine for one version: `choice`, except that under `auto` a variant `builder optimize`
/// made and timed on one engine (onnxruntime's int8 and host graph, OpenVINO's bf16) goes
/// there without timing the others, with all of them as before if that fails or the engine is
/// not in this image; a host-specific graph falls back to the portable model beside it where
/// this CPU's vector units differ from the build host's, or where it does not load.
fn load_engine(
    found: &ModelVersion,
    optimization: Option<&Optimization>,
    choice: EngineChoice,
    opts: &LoadOptions,
) -> Result<engine::Loaded> {
    let fallback = optimization
        .and_then(|o| o.fallback.as_ref())
        .map(|f| found.path.with_file_name(f));
    // A graph laid out for other vector units may load and yet not run correctly: not tried,
    // when its portable model is there to serve instead.
    if let Some(why) = optimization.and_then(Optimization::other_vectors) {
        match fallback.as_ref().filter(|f| f.is_file()) {
            Some(fallback) => {
                warn!(
                    "the optimized graph was laid out for the build host's vector units, which \
                     this CPU does not match ({why}): loading the portable model {} instead",
                    fallback.display()
                );
                return Ok(engine::load_chosen(choice, fallback, opts)?);
            }
            None => warn!(
                "the optimized graph was laid out for the build host's vector units, which this \
                 CPU does not match ({why}), and its portable model is missing: loading it anyway"
            ),
        }
    }
    let made_on = optimization.and_then(Optimization::engine);
    let preferred =
        made_on.filter(|kind| choice == EngineChoice::Auto && engine::available().contains(kind));
    let first = match preferred {
        Some(made_on) => engine::load(made_on, &found.path, opts)
            .map(|mut loaded| {
                loaded.notes.push(format!(
                    "Engine: {made_on}, which this optimized model was made and timed on \
                     (--engine auto: the others are not timed)"
                ));
                loaded
            })
            .or_else(|e| {
                warn!("{e}; timing every engine on it instead");
                engine::load_chosen(choice, &found.path, opts)
            }),
        None => engine::load_chosen(choice, &found.path, opts),
    };
    let (loaded, variant) = match (first, fallback) {
        (Ok(loaded), _) => (loaded, true),
        // A graph optimized for the build host's CPU that this CPU cannot run: the portable one.
        (Err(e), Some(fallback)) => {
            warn!(
                "{e}; loading the portable model {} instead (the optimized one was made for the build host's CPU)",
                fallback.display()
            );
            (engine::load_chosen(choice, &fallback, opts)?, false)
        }
        (Err(e), None) => return Err(e.into()),
    };
    let served = loaded.backend.kind();
    if let Some(made_on) = made_on.filter(|&kind| variant && kind != served) {
        warn!(
            "this model was optimized and timed on {made_on} and {served} serves it, which may be \
             much slower (EfficientNet-Lite0 int8 on tract: 127 ms a run against 5 ms); serve it \
             with {made_on}, or build the image from the fp32 model"
        );
    }
    Ok(loaded)
}
