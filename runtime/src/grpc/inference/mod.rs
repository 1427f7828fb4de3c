//! The Open Inference Protocol's gRPC service (KServe V2), `inference.GRPCInferenceService`,
//! beside TF Serving's services on `--port` and through the same `serving` path as every other
//! protocol: liveness and readiness, server and model metadata, Triton's model configuration
//! ModelInfer (typed `contents` or `raw_input_contents`; raw requests answered raw) and its
//! stream, and the model repository extension (`repository`).

mod repository;
pub mod tensor;

use std::pin::Pin;
use std::sync::Arc;

use prost::Message;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{finish, status};
use crate::error::ApiError;
use crate::models::{AppState, ServedModel};
use crate::proto::inference::grpc_inference_service_server::GrpcInferenceService;
use crate::proto::inference::model_metadata_response::TensorMetadata;
use crate::proto::inference::{
    DataType, ModelConfig, ModelConfigRequest, ModelConfigResponse, ModelInferRequest,
    ModelInferResponse, ModelInput, ModelMetadataRequest, ModelMetadataResponse, ModelOutput,
    ModelReadyRequest, ModelReadyResponse, ModelStreamInferResponse, ModelTensorReshape,
    RepositoryIndexRequest, RepositoryIndexResponse, RepositoryModelLoadRequest,
    RepositoryModelLoadResponse, RepositoryModelUnloadRequest, RepositoryModelUnloadResponse,
    ServerLiveRequest, ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse,
    ServerReadyRequest, ServerReadyResponse,
};
use crate::serving::{self, ModelSpec, RequestGuard, VersionChoice};
use crate::signature::TensorSpec;
use crate::tensor::DType;

/// The service's full name, as health checks and reflection list it.
pub const SERVICE: &str = "inference.GRPCInferenceService";

/// Extensions of the protocol this service implements, as Triton names them.
const EXTENSIONS: [&str; 2] = ["model_configuration", "model_repository"];

/// The platform V2 metadata reports: the model is ONNX whichever engine runs it.
const PLATFORM: &str = "onnxruntime_onnx";

/// The batch size the model configuration reports for a model that takes any batch.
const CONFIG_MAX_BATCH_SIZE: i32 = serving::MAX_IMAGES_PER_REQUEST as i32;

#[derive(Clone)]
pub struct Inference {
    state: Arc<AppState>,
}

/// The answers of ModelStreamInfer, one per request, in the requests' order.
type InferStream = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

/// How many answers of one stream may wait for the client to read them.
const STREAM_BUFFER: usize = 16;

impl Inference {
    pub fn new(state: Arc<AppState>) -> Self {
        Inference { state }
    }
}

/// A request's model and version: empty version is the latest AVAILABLE one.
fn spec<'a>(name: &'a str, version: &str) -> Result<ModelSpec<'a>, Status> {
    serving::require_name(name).map_err(status)?;
    let version = if version.is_empty() {
        VersionChoice::Latest
    } else {
        VersionChoice::Number(version.parse().map_err(|_| {
            status(ApiError::BadRequest(format!(
                "version '{version}' is not a number; versions are folder numbers such as 1"
            )))
        })?)
    };
    Ok(ModelSpec {
        name,
        version,
        signature_name: "",
    })
}

/// Runs `call` on the model version a request names, counted in the metrics as api `grpc-v2`.
fn on_model<T>(
    st: &AppState,
    name: &str,
    version: &str,
    method: &'static str,
    call: impl FnOnce(&ServedModel) -> T,
) -> Result<Response<T>, Status> {
    let mut guard = serving::track(st, name, "grpc-v2", method);
    let result = spec(name, version).and_then(|spec| {
        let model = serving::resolve(st, &spec).map_err(status)?;
        guard.version(model.version);
        Ok(call(&model))
    });
    finish(guard, &result);
    result.map(Response::new)
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = serving::ready(&self.state).is_ok();
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let spec = spec(&request.name, &request.version)?;
        // Unknown, loading or failed: not ready, as Triton answers.
        let ready = serving::resolve(&self.state, &spec).is_ok();
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "onnx-serving".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        on_model(&self.state, &r.name, &r.version, "metadata", |model| {
            metadata(&self.state, model)
        })
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let r = request.into_inner();
        on_model(&self.state, &r.name, &r.version, "config", |model| {
            ModelConfigResponse {
                config: Some(config(model)),
            }
        })
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let request = request.into_inner();
        let mut guard = serving::track(&self.state, &request.model_name, "grpc-v2", "infer");
        let result = self.infer(request, &mut guard).await;
        finish(guard, &result);
        result.map(Response::new)
    }

    type ModelStreamInferStream = InferStream;

    /// Each request of the stream is served as ModelInfer serves it, one after the other; a
    /// failed one is answered with its `error_message` and the stream goes on, as Triton's.
    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<InferStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let service = self.clone();
        tokio::spawn(async move {
            while let Some(next) = requests.next().await {
                let request = match next {
                    Ok(request) => request,
                    Err(_) => break, // the client went away or broke the stream
                };
                let mut guard = serving::track(
                    &service.state,
                    &request.model_name,
                    "grpc-v2",
                    "stream_infer",
                );
                let result = service.infer(request, &mut guard).await;
                finish(guard, &result);
                let answer = match result {
                    Ok(response) => ModelStreamInferResponse {
                        error_message: String::new(),
                        infer_response: Some(response),
                    },
                    Err(e) => ModelStreamInferResponse {
                        error_message: e.message().to_string(),
                        infer_response: None,
                    },
                };
                if tx.send(Ok(answer)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        Ok(Response::new(repository::index(
            &self.state,
            request.into_inner(),
        )))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        repository::load(&self.state, request).await?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        repository::unload(&self.state, request.into_inner())?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
}

impl Inference {
    async fn infer(
        &self,
        request: ModelInferRequest,
        guard: &mut RequestGuard,
    ) -> Result<ModelInferResponse, Status> {
        let model = {
            let spec = spec(&request.model_name, &request.model_version)?;
            serving::resolve(&self.state, &spec).map_err(status)?
        };
        guard.version(model.version);
        // Refused before the tensors are converted and images decoded when the queue stays full.
        let _admitted = model.pool.admit().await.map_err(status)?;
        let sig = model.api_signature();
        let names: Vec<String> = request.outputs.iter().map(|o| o.name.clone()).collect();
        let picked = serving::select_outputs(sig, &names).map_err(status)?;
        // No typed field holds FP16: such an answer goes raw, as the spec asks.
        let raw = !request.raw_input_contents.is_empty()
            || picked.iter().any(|&i| sig.outputs[i].dtype == DType::F16);
        let id = request.id.clone();
        let big = request.encoded_len() > serving::DECODE_INLINE_MAX;
        let decode = |model: &ServedModel, request: ModelInferRequest| {
            let named = tensor::inputs(request.inputs, request.raw_input_contents)?;
            serving::request_inputs(model, named)
        };
        let inputs = if big || model.serving.is_some() {
            let decoding = model.clone();
            serving::off_executor(move || decode(&decoding, request)).await
        } else {
            decode(&model, request)
        }
        .map_err(status)?;
        let outputs = serving::predict(&model, inputs).await.map_err(status)?;
        let mut response = ModelInferResponse {
            model_name: model.name.clone(),
            model_version: model.version.to_string(),
            id,
            ..Default::default()
        };
        for i in picked {
            let t = outputs.get(i).ok_or_else(|| {
                status(ApiError::Internal(format!(
                    "the model returned no output {i}"
                )))
            })?;
            let (out, bytes) = tensor::output(&sig.outputs[i].name, t, raw);
            response.outputs.push(out);
            response.raw_output_contents.extend(bytes);
        }
        Ok(response)
    }
}

/// Name, the AVAILABLE versions, platform, and the public signature's tensors (-1 for free
/// dimensions).
fn metadata(st: &AppState, model: &ServedModel) -> ModelMetadataResponse {
    let tensors = |specs: &[TensorSpec]| -> Vec<TensorMetadata> {
        specs
            .iter()
            .map(|s| TensorMetadata {
                name: s.name.clone(),
                datatype: s.dtype.v2_name().into(),
                shape: s.dims(),
            })
            .collect()
    };
    let sig = model.api_signature();
    ModelMetadataResponse {
        name: model.name.clone(),
        versions: serving::available_versions(st, &model.name)
            .iter()
            .map(u64::to_string)
            .collect(),
        platform: PLATFORM.into(),
        inputs: tensors(&sig.inputs),
        outputs: tensors(&sig.outputs),
    }
}

/// Triton's model configuration, the fields clients read (as REST's `/config`).
fn config(model: &ServedModel) -> ModelConfig {
    let sig = model.api_signature();
    let batched = sig.batches();
    // Without the batch dimension when batching; one value per batch entry is dims [1]
    // reshaped to [].
    let dims = |s: &TensorSpec| -> (Vec<i64>, Option<ModelTensorReshape>) {
        let dims = s.dims()[usize::from(batched)..].to_vec();
        if dims.is_empty() {
            (vec![1], Some(ModelTensorReshape { shape: vec![] }))
        } else {
            (dims, None)
        }
    };
    let data_type = |d: DType| {
        DataType::from_str_name(d.triton_config_name()).unwrap_or(DataType::TypeInvalid) as i32
    };
    ModelConfig {
        name: model.name.clone(),
        platform: PLATFORM.into(),
        backend: "onnxruntime".into(),
        max_batch_size: if batched { CONFIG_MAX_BATCH_SIZE } else { 0 },
        input: sig
            .inputs
            .iter()
            .map(|s| {
                let (dims, reshape) = dims(s);
                ModelInput {
                    name: s.name.clone(),
                    data_type: data_type(s.dtype),
                    dims,
                    reshape,
                }
            })
            .collect(),
        output: sig
            .outputs
            .iter()
            .map(|s| {
                let (dims, reshape) = dims(s);
                ModelOutput {
                    name: s.name.clone(),
                    data_type: data_type(s.dtype),
                    dims,
                    reshape,
                }
            })
            .collect(),
    }
}
