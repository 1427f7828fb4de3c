//! `runtime`'s command line: flags named like `tensorflow_model_server`'s, each also read from
//! an environment variable (all names in [`env`]), and the subcommands: `serve` (the default),
//! `check-model`, `healthcheck`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::EngineChoice;
use crate::pool::Batching;

pub mod check_model;
pub mod env;
pub mod healthcheck;
pub mod serve;

#[derive(Parser, Debug)]
#[command(
    name = "runtime",
    version,
    about = "Serve an ONNX model over TensorFlow Serving's REST and gRPC APIs",
    long_about = "Serve an ONNX model over TensorFlow Serving's REST API (--rest_api_port, 8501) and \
        gRPC API (--port, 8500), run by tract or \
        onnxruntime (--engine; auto keeps the faster).\n\n\
        Models live at <model_base_path>/<model_name>/<version>/model.onnx; the highest numeric \
        version is served, and a higher one copied in later replaces it without a restart. \
        --model_config_file serves several models, with version policies and labels (TF \
        Serving's format). An optional signature.toml beside model.onnx makes an image \
        classifier take {\"b64\": JPEG or PNG} and answer classes and probabilities, as TF \
        Serving's ResNet did (see the README). With no subcommand, `runtime` serves (as \
        `runtime serve`).\n\n\
        Example:\n  runtime --model_name=resnet --model_base_path=/models\n  \
        curl -d '{\"instances\": [[1.0, 2.0]]}' localhost:8501/v1/models/resnet:predict",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve a model over REST and gRPC (the default).
    Serve(ServeArgs),
    /// Load a model with every available engine, run it once on zeros; print its inputs and
    /// outputs and each engine's load time, run time and verdict.
    CheckModel(CheckModelArgs),
    /// Exit 0 when the local server answers and its model is AVAILABLE (for Docker HEALTHCHECK).
    Healthcheck(HealthcheckArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Port of the gRPC API: TF Serving's PredictionService and ModelService, gRPC health and
    /// reflection (0 picks a free one and logs it).
    #[arg(long = "port", env = env::GRPC_PORT, default_value_t = 8500)]
    pub port: u16,
    /// Serve no gRPC API (REST only); --port is then not bound.
    #[arg(long = "disable_grpc", alias = "disable-grpc", env = env::DISABLE_GRPC)]
    pub disable_grpc: bool,
    /// Largest gRPC request message, in bytes; larger ones get RESOURCE_EXHAUSTED. The default
    /// takes a 1x1024x1024x3 float tensor with room to spare.
    #[arg(long = "grpc_max_receive_message_bytes", alias = "grpc-max-receive-message-bytes", env = env::GRPC_MAX_RECEIVE_MESSAGE_BYTES, default_value_t = 64 * 1024 * 1024)]
    pub grpc_max_receive_message_bytes: usize,
    /// Answer gRPC Predict with tensor_content bytes instead of typed fields (float_val ...):
    /// less encoding work for large outputs, for clients that read tensor_content (tf.make_ndarray
    /// reads both).
    #[arg(long = "grpc_response_tensor_content", alias = "grpc-response-tensor-content", env = env::GRPC_RESPONSE_TENSOR_CONTENT)]
    pub grpc_response_tensor_content: bool,
    /// Port of the REST API (0 picks a free one and logs it).
    #[arg(long = "rest_api_port", alias = "rest-api-port", env = env::REST_API_PORT, default_value_t = 8501)]
    pub rest_api_port: u16,
    /// Address the REST and gRPC APIs listen on.
    #[arg(long = "rest_api_host", alias = "rest-api-host", env = env::REST_API_HOST, default_value = "0.0.0.0")]
    pub rest_api_host: String,
    /// Name clients use in /v1/models/<name>; the model is read from <model_base_path>/<name>/.
    #[arg(long = "model_name", alias = "model-name", env = env::MODEL_NAME, default_value = "model")]
    pub model_name: String,
    /// Folder holding <model_name>/<version>/model.onnx. A folder that itself holds numbered
    /// versions is served directly, as TF Serving's --model_base_path=/models/resnet is.
    #[arg(long = "model_base_path", alias = "model-base-path", env = env::MODEL_BASE_PATH, default_value = "/models")]
    pub model_base_path: PathBuf,
    /// Serve several models: TF Serving's ModelServerConfig in protobuf text format,
    /// `model_config_list { config { name: "resnet" base_path: "/models/resnet"
    /// model_platform: "onnx" model_version_policy { latest { num_versions: 2 } }
    /// version_labels { key: "stable" value: 1 } } }`. Replaces --model_name and
    /// --model_base_path. Policies: latest { num_versions }, all { }, specific { versions }.
    #[arg(long = "model_config_file", alias = "model-config-file", env = env::MODEL_CONFIG_FILE)]
    pub model_config_file: Option<PathBuf>,
    /// Re-read --model_config_file every this many seconds and apply what changed (models
    /// added or removed, policies, labels); 0 reads it once.
    #[arg(long = "model_config_file_poll_wait_seconds", alias = "model-config-file-poll-wait-seconds", env = env::MODEL_CONFIG_FILE_POLL_WAIT_SECONDS, default_value_t = 0)]
    pub model_config_file_poll_wait_seconds: u64,
    /// Look for new and removed version folders every this many seconds (0: only at start). A
    /// new version loads in the background once its files stop changing between two looks,
    /// then replaces the old one without a failed request.
    #[arg(long = "file_system_poll_wait_seconds", alias = "file-system-poll-wait-seconds", env = env::FILE_SYSTEM_POLL_WAIT_SECONDS, default_value_t = 1)]
    pub file_system_poll_wait_seconds: u64,
    /// Let a new version label name a version that is not AVAILABLE yet (requests using it get
    /// UNAVAILABLE, 503, while it loads and NOT_FOUND, 404, while it is not there); without it
    /// a label moves only to an AVAILABLE version.
    #[arg(long = "allow_version_labels_for_unavailable_models", alias = "allow-version-labels-for-unavailable-models", env = env::ALLOW_VERSION_LABELS_FOR_UNAVAILABLE_MODELS)]
    pub allow_version_labels_for_unavailable_models: bool,
    /// Load a version that arrives while serving (a new version folder, a config reload, a
    /// repository load) in a child process (`runtime check-model`) first, so that an engine
    /// that crashes on it (an abort, a segfault: what no unwinding catches) ends that version,
    /// END with the signal, not the server. Costs one more load of each such version; false
    /// loads it in the server directly. Models present at start-up load directly.
    #[arg(long = "check_loads_in_child_process", alias = "check-loads-in-child-process", env = env::CHECK_LOADS_IN_CHILD_PROCESS, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub check_loads_in_child_process: bool,
    /// Threads answering HTTP (0: one per CPU core).
    #[arg(long = "rest_api_num_threads", alias = "rest-api-num-threads", env = env::REST_API_NUM_THREADS, default_value_t = 0)]
    pub rest_api_num_threads: usize,
    /// Threads one model run may use (0: timed at warm-up. Every core this process may use
    /// when they make a lone run 0.9 x cores faster for onnxruntime, 1.15x for tract; else one per
    /// worker, and with onnxruntime a session on every core for a request that comes alone,
    /// unless a run takes under a millisecond). N: every run gets N.
    #[arg(long = "inference_threads", alias = "inference-threads", env = env::INFERENCE_THREADS, default_value_t = 0)]
    pub inference_threads: usize,
    /// Model runs that may proceed at the same time (0: as many as fill the cores: with tract
    /// one per core, sharing its intra-op pool; with onnxruntime cores / intra-op threads, each
    /// worker with a session of its own).
    #[arg(long = "inference_workers", alias = "inference-workers", env = env::INFERENCE_WORKERS, default_value_t = 0)]
    pub inference_workers: usize,
    /// Serve Prometheus metrics on the REST port at --metrics_path: requests by model, version,
    /// API, method and status, request and engine latency, in-flight requests, queue depth,
    /// model state and load time, process CPU and memory.
    #[arg(long = "enable_metrics", alias = "enable-metrics", env = env::ENABLE_METRICS)]
    pub enable_metrics: bool,
    /// Where --enable_metrics serves them (TF Serving's path by default).
    #[arg(long = "metrics_path", alias = "metrics-path", env = env::METRICS_PATH, default_value = crate::metrics::DEFAULT_PATH)]
    pub metrics_path: String,
    /// TF Serving's monitoring config, protobuf text format:
    /// `prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }`; the same
    /// as --enable_metrics and --metrics_path.
    #[arg(long = "monitoring_config_file", alias = "monitoring-config-file", env = env::MONITORING_CONFIG_FILE)]
    pub monitoring_config_file: Option<PathBuf>,
    /// Log every answered request (REST and gRPC): model, version, api, method, status and
    /// latency, as one structured line each (target `access`). Off by default.
    #[arg(long = "access_log", alias = "access-log", env = env::ACCESS_LOG)]
    pub access_log: bool,
    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long = "max_body_bytes", alias = "max-body-bytes", env = env::MAX_BODY_BYTES, default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Longest a REST call may take, from its headers to its answer (body upload and model
    /// run included); past that, 504 with a JSON error. TF Serving's flag and default.
    #[arg(long = "rest_api_timeout_in_ms", alias = "rest-api-timeout-in-ms", env = env::REST_API_TIMEOUT_IN_MS, default_value_t = 30_000)]
    pub rest_api_timeout_in_ms: u64,
    /// Time an HTTP client has to send a request's headers before its connection is closed
    /// (slow clients cannot hold connections).
    #[arg(long = "http_header_read_timeout_seconds", alias = "http-header-read-timeout-seconds", env = env::HTTP_HEADER_READ_TIMEOUT_SECONDS, default_value_t = 10)]
    pub http_header_read_timeout_seconds: u64,
    /// HTTP connections open at once; more wait to be accepted until one closes.
    #[arg(long = "max_connections", alias = "max-connections", env = env::MAX_CONNECTIONS, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Requests that may wait for a worker; past that, 429.
    #[arg(long = "queue_capacity", alias = "queue-capacity", env = env::QUEUE_CAPACITY, default_value_t = 64)]
    pub queue_capacity: usize,
    /// Which engine runs the model: auto times a lone run on every engine this binary and image
    /// have (onnxruntime and OpenVINO when their libraries are present, tract always) and keeps
    /// the fastest; a model one engine cannot load is served by another. An explicit engine that
    /// cannot load the model stops the server with its reason.
    #[arg(long = "engine", env = env::ENGINE, value_enum, default_value_t = EngineChoice::Auto)]
    pub engine: EngineChoice,
    /// onnxruntime's C library (libonnxruntime.so.1, 1.24 or newer) [default: beside the
    /// executable, then /usr/lib/onnxruntime/]. Without it, tract serves.
    #[arg(long = "onnxruntime_library", alias = "onnxruntime-library", env = env::ONNXRUNTIME_LIBRARY)]
    pub onnxruntime_library: Option<PathBuf>,
    /// OpenVINO's C library (libopenvino_c.so, 2025.1 or newer, with its CPU plugin and ONNX
    /// front end beside it), or their folder [default: /usr/lib/openvino/]. Without it,
    /// OpenVINO is not used.
    #[arg(long = "openvino_library", alias = "openvino-library", env = env::OPENVINO_LIBRARY)]
    pub openvino_library: Option<PathBuf>,
    /// Let onnxruntime's idle intra-op threads spin for work instead of sleeping: a little
    /// lower latency under steady load, a core burnt after each request. Off by default (see
    /// BENCHMARKS.md); only matters with more than one intra-op thread.
    #[arg(long = "ort_spinning", alias = "ort-spinning", env = env::ORT_SPINNING)]
    pub ort_spinning: bool,
    /// Merge concurrent requests into one batched run (TF Serving's --enable_batching). Off by
    /// default: tract ran batches slower per instance than single runs on every CNN measured
    /// (BENCHMARKS.md, `make bench`), and each allowed size costs a plan at load.
    #[arg(long = "enable_batching", alias = "enable-batching", env = env::ENABLE_BATCHING)]
    pub enable_batching: bool,
    /// Most instances one batched run may hold (with --enable_batching).
    #[arg(long = "max_batch_size", alias = "max-batch-size", env = env::MAX_BATCH_SIZE, default_value_t = 8)]
    pub max_batch_size: usize,
    /// How long a worker holding a request waits for more to join its batch, in microseconds
    /// (with --enable_batching; 0: merge only what is already queued).
    #[arg(long = "batch_timeout_micros", alias = "batch-timeout-micros", env = env::BATCH_TIMEOUT_MICROS, default_value_t = 0)]
    pub batch_timeout_micros: u64,
    /// Batch sizes that get a plan of their own, comma-separated; a merged batch is padded up to
    /// the next one [default: powers of two below --max_batch_size, and it].
    #[arg(long = "allowed_batch_sizes", alias = "allowed-batch-sizes", env = env::ALLOWED_BATCH_SIZES, value_delimiter = ',')]
    pub allowed_batch_sizes: Vec<usize>,
}

impl ServeArgs {
    /// The batching settings, when --enable_batching is on.
    pub fn batching(&self) -> Result<Option<Batching>, String> {
        if !self.enable_batching {
            return Ok(None);
        }
        Batching::new(
            self.max_batch_size,
            std::time::Duration::from_micros(self.batch_timeout_micros),
            &self.allowed_batch_sizes,
        )
        .map(Some)
    }
}

#[derive(Args, Debug, Clone)]
pub struct CheckModelArgs {
    /// An .onnx file, or a model folder laid out as <version>/model.onnx
    /// [default: the model `runtime serve` would load, from MODEL_BASE_PATH and MODEL_NAME].
    pub path: Option<PathBuf>,
    /// Model name used when PATH is not given.
    #[arg(long = "model_name", alias = "model-name", env = env::MODEL_NAME, default_value = "model")]
    pub model_name: String,
    /// Base path used when PATH is not given.
    #[arg(long = "model_base_path", alias = "model-base-path", env = env::MODEL_BASE_PATH, default_value = "/models")]
    pub model_base_path: PathBuf,
    /// Batch size of the test run, for models whose batch dimension is free.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Engines to check with: auto (every one available; the model passes if one can serve it)
    /// or the one named, as `serve --engine` would use.
    #[arg(long = "engine", env = env::ENGINE, value_enum, default_value_t = EngineChoice::Auto)]
    pub engine: EngineChoice,
    /// onnxruntime's C library, as for `serve`; without it onnxruntime is not checked.
    #[arg(long = "onnxruntime_library", alias = "onnxruntime-library", env = env::ONNXRUNTIME_LIBRARY)]
    pub onnxruntime_library: Option<PathBuf>,
    /// OpenVINO's C library or its folder, as for `serve`; without it, the image's folder
    /// (/usr/lib/openvino) when it holds one, else OpenVINO is not checked.
    #[arg(long = "openvino_library", alias = "openvino-library", env = env::OPENVINO_LIBRARY)]
    pub openvino_library: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct HealthcheckArgs {
    /// Model status URL [default: http://127.0.0.1:<rest_api_port>/v1/models/<model_name>].
    #[arg(long, env = env::HEALTHCHECK_URL)]
    pub url: Option<String>,
    #[arg(long = "rest_api_port", env = env::REST_API_PORT, default_value_t = 8501, hide = true)]
    pub rest_api_port: u16,
    #[arg(long = "model_name", env = env::MODEL_NAME, default_value = "model", hide = true)]
    pub model_name: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
}
