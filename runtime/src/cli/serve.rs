//! `runtime serve`: bind, load the models in the background (the model manager, `models`),
//! answer REST and gRPC until SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::ServeArgs;
use crate::engine::{self, EngineChoice, Threads};
use crate::grpc::{self, GrpcOptions};
use crate::metrics;
use crate::models::{
    self, config, model_dir, AppState, Limits, Manager, ManagerOptions, ModelConfig, PoolOptions,
};
use crate::proto::tensorflow::serving::MonitoringConfig;
use crate::rest::listener::HttpLimits;

/// Where metrics are served, if anywhere: --monitoring_config_file (TF Serving's), else
/// --enable_metrics with --metrics_path.
fn metrics_path(args: &ServeArgs) -> Result<Option<String>> {
    let (enabled, path, flag) = match &args.monitoring_config_file {
        Some(file) => {
            let config: MonitoringConfig =
                crate::proto::text::read(file, "tensorflow.serving.MonitoringConfig")
                    .map_err(anyhow::Error::msg)
                    .context("--monitoring_config_file")?;
            let prometheus = config.prometheus_config.unwrap_or_default();
            let path = match prometheus.path.as_str() {
                "" => metrics::DEFAULT_PATH.to_string(),
                p => p.to_string(),
            };
            (prometheus.enable, path, "prometheus_config.path")
        }
        None => (
            args.enable_metrics,
            args.metrics_path.clone(),
            "--metrics_path",
        ),
    };
    if !enabled {
        return Ok(None);
    }
    if !path.starts_with('/') || path.starts_with("/v1/") {
        anyhow::bail!(
            "{flag} {path} must start with '/' and stay out of the API's /v1/, e.g. {}",
            metrics::DEFAULT_PATH
        );
    }
    Ok(Some(path))
}

/// How long in-flight requests and calls may take to finish after SIGTERM: under Docker's
/// default 10 s before SIGKILL.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

pub async fn serve(args: ServeArgs) -> Result<()> {
    let configs = match &args.model_config_file {
        Some(file) => {
            let configs = config::read(file)
                .map_err(anyhow::Error::msg)
                .context("--model_config_file")?;
            info!(
                "Model config {}: {} model(s); --model_name and --model_base_path are not used",
                file.display(),
                configs.len()
            );
            configs
        }
        None => vec![ModelConfig::single(
            &args.model_name,
            model_dir(&args.model_base_path, &args.model_name),
        )],
    };
    // Workers: 0 means as many as keep the cores busy (the engine knows). Intra-op threads: 0
    // means 1 or the cores this process may use, whichever serves this model better (timed at
    // warm-up).
    let budget = hostcpu::core_budget();
    info!("{}", budget.describe());
    let cores = budget.cores;
    let (intra_op, threads) = match args.inference_threads {
        0 if cores > 1 => (
            format!("1 or {cores}, chosen at warm-up"),
            Threads::Auto { max: cores },
        ),
        0 => ("1".to_string(), Threads::Fixed(1)),
        n => (n.to_string(), Threads::Fixed(n)),
    };
    let batching = args.batching().map_err(anyhow::Error::msg)?;
    // Each library is opened only where its engine may serve: with --engine tract, neither.
    if matches!(args.engine, EngineChoice::Auto | EngineChoice::Onnxruntime) {
        match engine::onnxruntime::init(args.onnxruntime_library.as_deref()) {
            Ok(lib) => info!(
                "onnxruntime {} loaded from {}",
                lib.version,
                lib.path.display()
            ),
            Err(why) if args.engine == EngineChoice::Onnxruntime => {
                anyhow::bail!("--engine onnxruntime, but {why}")
            }
            Err(_) => {} // said when the model loads
        }
    }
    if matches!(args.engine, EngineChoice::Auto | EngineChoice::Openvino) {
        match engine::openvino::init(args.openvino_library.as_deref()) {
            Ok(lib) => info!(
                "OpenVINO {} loaded from {}",
                lib.version,
                lib.path.display()
            ),
            Err(why) if args.engine == EngineChoice::Openvino => {
                anyhow::bail!("--engine openvino, but {why}")
            }
            // An image with OpenVINO whose library does not open serves on without it.
            Err(why) if engine::openvino::expected(args.openvino_library.as_deref()) => {
                warn!("OpenVINO is not available, serving with the other engines: {why}")
            }
            Err(why) => debug!("OpenVINO is not available: {why}"),
        }
    }
    let pool = PoolOptions {
        workers: (args.inference_workers > 0).then_some(args.inference_workers),
        cores,
        queue: args.queue_capacity,
        batching,
        engine: args.engine,
        threads,
        ort_spinning: args.ort_spinning,
        model_name: String::new(),
    };

    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_millis(args.rest_api_timeout_in_ms.max(1)),
    };
    let http_limits = HttpLimits {
        header_read_timeout: Duration::from_secs(args.http_header_read_timeout_seconds.max(1)),
        max_connections: args.max_connections,
    };
    let state = AppState::new(limits);
    if args.access_log {
        metrics::enable_access_log();
    }
    if let Some(path) = metrics_path(&args)? {
        state.enable_metrics(path);
    }
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
    let grpc_listener = if args.disable_grpc {
        info!("gRPC is off (--disable_grpc)");
        None
    } else {
        let listener = TcpListener::bind((args.rest_api_host.as_str(), args.port))
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {}:{} for gRPC; is another server using the port? Pick another with --port, or --disable_grpc",
                    args.rest_api_host, args.port
                )
            })?;
        let grpc_addr = listener
            .local_addr()
            .context("listening socket has no address")?;
        info!("Running gRPC ModelServer at {grpc_addr} ...");
        Some(listener)
    };
    info!("Exporting HTTP/REST API at:{addr} ...");
    if let Some(path) = state.metrics_path() {
        info!("Prometheus metrics at http://{addr}{path}");
    }
    info!("Engine: {}; intra-op threads: {intra_op}", args.engine);
    if let Some(b) = &pool.batching {
        info!(
            "Dynamic batching: up to {} instances per run, batch sizes {:?}, waiting up to {} µs for a batch to fill",
            b.max_batch_size,
            b.allowed_batch_sizes,
            b.timeout.as_micros()
        );
    }
    let poll = |seconds: u64| (seconds > 0).then(|| Duration::from_secs(seconds));
    let manager = Manager::new(
        state.clone(),
        pool,
        ManagerOptions {
            file_system_poll: poll(args.file_system_poll_wait_seconds),
            allow_labels_for_unavailable: args.allow_version_labels_for_unavailable_models,
            check_loads_in_child: args.check_loads_in_child_process,
        },
    );
    let failed_rx = manager.startup_failure();
    manager.start(configs)?;
    state.set_control(Arc::downgrade(&manager) as _);
    if let (Some(file), Some(every)) = (
        &args.model_config_file,
        poll(args.model_config_file_poll_wait_seconds),
    ) {
        tokio::spawn(models::follow_config_file(
            manager.clone(),
            file.clone(),
            every,
        ));
    }
    let grpc_opts = GrpcOptions {
        max_receive_message_bytes: args.grpc_max_receive_message_bytes,
        response_tensor_content: args.grpc_response_tensor_content,
    };

    // One signal stops both servers: each stops accepting, in-flight calls finish.
    let (stop_tx, stop_rx) = watch::channel(false);
    let failed_rx_signal = failed_rx.clone();
    tokio::spawn(async move {
        shutdown_signal(failed_rx_signal).await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let rest = async {
        crate::rest::listener::serve(
            listener,
            crate::rest::app(state.clone()),
            http_limits,
            stopped(stop_rx.clone()),
        )
        .await
        .context("HTTP server failed")
    };
    let grpc = async {
        match grpc_listener {
            Some(l) => grpc::serve(l, state.clone(), grpc_opts, stopped(stop_rx.clone())).await,
            None => Ok(()),
        }
    };
    // In-flight calls get SHUTDOWN_GRACE to finish; streams that never end on their own (a
    // client's health Watch) must not keep the process from stopping.
    let grace = async {
        stopped(stop_rx.clone()).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = async { tokio::try_join!(rest, grpc) } => {
            served?;
        }
        _ = grace => warn!(
            "calls still open {} s after the stop signal (a gRPC health Watch?): stopping anyway",
            SHUTDOWN_GRACE.as_secs()
        ),
    }
    if let Some(message) = failed_rx.borrow().clone() {
        anyhow::bail!("{message}");
    }
    info!("Server stopped");
    Ok(())
}

/// Resolves on SIGINT, SIGTERM (what `docker stop` sends) or a failed model load. Both servers
/// then stop accepting connections and let in-flight requests finish.
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
