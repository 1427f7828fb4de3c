//! `runtime serve`: bind, load the model in the background, answer HTTP until SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};
use tract_onnx::prelude::{TValue, TVec};

use crate::config::{compute_cores, model_dir, ServeArgs};
use crate::infer::{set_intra_op_threads, tune_intra_op_threads, Batching, InferencePool};
use crate::model::{
    find_latest_version, load_onnx_batched, zero_inputs, ModelVersion, Plan, ServingSignature,
};
use crate::state::{AppState, Limits, ModelState, ServedModel};

pub async fn serve(args: ServeArgs) -> Result<()> {
    let dir = model_dir(&args.model_base_path, &args.model_name);
    let found = find_latest_version(&dir)
        .with_context(|| format!("cannot serve model '{}'", args.model_name))?;
    // Workers: 0 means one per physical core. Intra-op threads: 0 means 1 or the physical
    // cores, whichever serves this model better (decided at warm-up).
    let cores = compute_cores();
    let workers = if args.inference_workers == 0 {
        cores
    } else {
        args.inference_workers
    };
    let (intra_op, auto_threads) = match args.inference_threads {
        0 if cores > 1 => (format!("1 or {cores}, chosen at warm-up"), Some(cores)),
        0 => ("1".to_string(), None),
        n => (n.to_string(), None),
    };
    if auto_threads.is_none() {
        set_intra_op_threads(args.inference_threads.max(1));
    }
    let batching = args.batching().map_err(anyhow::Error::msg)?;
    let pool = PoolOptions {
        workers,
        queue: args.queue_capacity,
        batching,
        auto_threads,
    };

    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
    };
    let state = AppState::new(
        args.model_name.clone(),
        ModelState::Loading {
            version: found.version,
        },
        limits,
    );
    let listener = TcpListener::bind((args.rest_api_host.as_str(), args.rest_api_port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}:{}; is another server using the port? Pick another with --rest_api_port",
                args.rest_api_host, args.rest_api_port
            )
        })?;
    let addr = listener
        .local_addr()
        .context("listening socket has no address")?;

    info!(
        "Running ModelServer at 0.0.0.0:{} (gRPC is not served yet; the port is reserved) ...",
        args.port
    );
    info!("Exporting HTTP/REST API at:{addr} ...");
    info!(
        "Model '{}' version {} from {} ({} inference worker(s); intra-op threads: {})",
        args.model_name,
        found.version,
        found.path.display(),
        workers,
        intra_op
    );

    let (failed_tx, failed_rx) = watch::channel(None::<String>);
    let loader_state = state.clone();
    if let Some(b) = &pool.batching {
        info!(
            "Dynamic batching: up to {} instances per run, batch sizes {:?}, waiting up to {} µs for a batch to fill",
            b.max_batch_size,
            b.allowed_batch_sizes,
            b.timeout.as_micros()
        );
    }
    tokio::task::spawn_blocking(move || match load_and_warm_up(&found, &pool) {
        Ok(model) => {
            // Publish the model before saying so: clients (and tests) act on this log line.
            let model = Arc::new(model);
            loader_state.set_model_state(ModelState::Available(model.clone()));
            info!(
                "Successfully loaded servable version {{name: {} version: {}}} in {:.0} ms",
                loader_state.model_name,
                model.version,
                model.load_time.as_secs_f64() * 1000.0
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
                    info!("  input  {spec} (an image: {{\"b64\": JPEG or PNG}} or [height, width, 3] of 0-1)");
                }
                for spec in &serving.public.outputs {
                    info!("  output {spec}");
                }
            }
        }
        Err(e) => {
            let message = format!("{e:#}");
            error!(
                "Failed to load model '{}': {message}",
                loader_state.model_name
            );
            loader_state.set_model_state(ModelState::Failed {
                version: Some(found.version),
                message: message.clone(),
            });
            let _ = failed_tx.send(Some(message));
        }
    });

    axum::serve(listener, crate::app(state))
        .with_graceful_shutdown(shutdown_signal(failed_rx.clone()))
        .await
        .context("HTTP server failed")?;
    if let Some(message) = failed_rx.borrow().clone() {
        anyhow::bail!("model '{}' could not be loaded: {message}", args.model_name);
    }
    info!("Server stopped");
    Ok(())
}

/// How a model's runs are scheduled.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// Inference threads (runs that may proceed at once).
    pub workers: usize,
    /// Requests that may wait for a worker.
    pub queue: usize,
    pub batching: Option<Batching>,
    /// Choose the intra-op threads at warm-up, 1 or this many (`tune_intra_op_threads`); None
    /// leaves tract's executor as it is.
    pub auto_threads: Option<usize>,
}

impl PoolOptions {
    /// `workers` threads, a queue of `queue`, no batching, the executor left as it is.
    pub fn new(workers: usize, queue: usize) -> PoolOptions {
        PoolOptions {
            workers,
            queue,
            batching: None,
            auto_threads: None,
        }
    }
}

/// A lone run slower than this is not timed again to choose the intra-op threads (six more runs
/// would delay start-up too much); such a model gets every core.
const TUNE_LIMIT: Duration = Duration::from_secs(2);

/// Parses, optimizes and runs the model once on zeros, so the first request is not the slow one.
pub fn load_and_warm_up(found: &ModelVersion, pool: &PoolOptions) -> Result<ServedModel> {
    let started = Instant::now();
    let sizes = pool
        .batching
        .as_ref()
        .map_or(&[][..], |b| &b.allowed_batch_sizes[..]);
    let loaded = load_onnx_batched(&found.path, sizes)?;
    if pool.batching.is_some() && loaded.plan.batch_sizes().next().is_none() {
        warn!(
            "--enable_batching has no effect on this model: its batch dimension is fixed, or an \
             output does not keep it first"
        );
    }
    let serving = ServingSignature::load(&found.path, &loaded.signature)?.map(Arc::new);
    // Batch 1 is what single requests run on: warm that plan (and choose the intra-op threads
    // on it), then those of the batch sizes.
    let mut batches = vec![1];
    batches.extend(loaded.plan.batch_sizes());
    for n in batches {
        let inputs = zero_inputs(&loaded.signature, n).context("cannot build warm-up inputs")?;
        let plan = loaded.plan.for_batch(Some(n));
        let warm = Instant::now();
        plan.run(inputs.clone())
            .map_err(|e| anyhow::anyhow!("warm-up run on zeros (batch {n}) failed: {e:#}"))?;
        let took = warm.elapsed();
        info!(
            "Warm-up run (batch {n}) took {:.1} ms",
            took.as_secs_f64() * 1000.0
        );
        if let (1, Some(max)) = (n, pool.auto_threads) {
            choose_threads(plan, &inputs, max, took)?;
        }
    }
    let pool = InferencePool::start(loaded.plan, pool.workers, pool.queue, pool.batching.clone())
        .context("cannot start inference threads")?;
    Ok(ServedModel {
        version: found.version,
        path: found.path.clone(),
        signature: loaded.signature,
        serving,
        pool,
        load_time: started.elapsed(),
    })
}

/// Sets the intra-op threads to 1 or `max` by timing `plan` (`tune_intra_op_threads`), or to
/// `max` if its warm-up run (`took`, on the executor as it was) was too slow to repeat; logs the
/// choice.
fn choose_threads(plan: &Plan, inputs: &TVec<TValue>, max: usize, took: Duration) -> Result<()> {
    if took > TUNE_LIMIT {
        set_intra_op_threads(max);
        info!("Intra-op threads: {max} (a lone run is too slow to time again)");
        return Ok(());
    }
    let (chosen, one, many) = tune_intra_op_threads(plan, inputs, max)
        .map_err(|e| anyhow::anyhow!("timing run on zeros failed: {e:#}"))?;
    info!(
        "Intra-op threads: {chosen} (a lone run took {:.1} ms on 1 thread, {:.1} ms on {max}; \
         {max} must be 15 % faster to be worth holding cores that concurrent requests could use)",
        one.as_secs_f64() * 1000.0,
        many.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Resolves on SIGINT, SIGTERM (what `docker stop` sends) or a failed model load. axum then
/// stops accepting connections and lets in-flight requests finish.
async fn shutdown_signal(mut load_failed: watch::Receiver<Option<String>>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    let failed = async {
        // After a successful load the sender is dropped: that is no reason to stop.
        if load_failed.wait_for(|m| m.is_some()).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = ctrl_c => info!("SIGINT received: finishing in-flight requests"),
        _ = terminate => info!("SIGTERM received: finishing in-flight requests"),
        _ = failed => {},
    }
}
