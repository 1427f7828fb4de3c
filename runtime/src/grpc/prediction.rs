//! `tensorflow.serving.PredictionService`: Predict and GetModelMetadata; Classify, Regress and
//! MultiInference answer UNIMPLEMENTED (they need TensorFlow's classification and regression
//! signatures, which ONNX models do not have), Classify and Regress after refusing a model spec
//! without a name (INVALID_ARGUMENT), as Predict and GetModelMetadata do. (MultiInference's
//! model specs sit in its tasks, which the trimmed proto here does not carry.)

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};

use super::tensor::{self, Value};
use super::{finish, model_spec, served_spec, status, GrpcOptions};
use crate::error::ApiError;
use crate::models::{AppState, ServedModel};
use crate::proto::tensorflow::serving::prediction_service_server::PredictionService;
use crate::proto::tensorflow::serving::{
    ClassificationRequest, ClassificationResponse, GetModelMetadataRequest,
    GetModelMetadataResponse, MultiInferenceRequest, MultiInferenceResponse, PredictRequest,
    PredictResponse, RegressionRequest, RegressionResponse, SignatureDefMap,
};
use crate::proto::tensorflow::{tensor_info, DataType, SignatureDef, TensorInfo, TensorProto};
use crate::serving::{self, RequestGuard};
use crate::signature::{ImageSource, Signature, DEFAULT_SIGNATURE, PREDICT_METHOD};
use crate::tensor::{Tensor, TensorData};

/// The one metadata field TF Serving defines.
const SIGNATURE_DEF: &str = "signature_def";

pub struct Prediction {
    state: Arc<AppState>,
    /// Answer with tensor_content bytes.
    raw: bool,
    /// The request message limit, which also bounds what short typed fields are filled up to.
    max_bytes: usize,
}

impl Prediction {
    pub fn new(state: Arc<AppState>, opts: &GrpcOptions) -> Self {
        Prediction {
            state,
            raw: opts.response_tensor_content,
            max_bytes: opts.max_receive_message_bytes,
        }
    }
}

fn onnx_only(method: &str) -> Status {
    status(serving::predict_only(method, "Predict"))
}

#[tonic::async_trait]
impl PredictionService for Prediction {
    async fn classify(
        &self,
        request: Request<ClassificationRequest>,
    ) -> Result<Response<ClassificationResponse>, Status> {
        // A malformed model spec is refused as such first, as in every call that takes one.
        model_spec(request.get_ref().model_spec.as_ref())?;
        Err(onnx_only("Classify"))
    }

    async fn regress(
        &self,
        request: Request<RegressionRequest>,
    ) -> Result<Response<RegressionResponse>, Status> {
        model_spec(request.get_ref().model_spec.as_ref())?;
        Err(onnx_only("Regress"))
    }

    async fn multi_inference(
        &self,
        _: Request<MultiInferenceRequest>,
    ) -> Result<Response<MultiInferenceResponse>, Status> {
        Err(onnx_only("MultiInference"))
    }

    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        let request = request.into_inner();
        let name = request.model_spec.as_ref().map_or("", |s| &s.name);
        let mut guard = serving::track(&self.state, name, "grpc", "predict");
        let result = self.run_predict(request, &mut guard).await;
        finish(guard, &result);
        result.map(Response::new)
    }

    async fn get_model_metadata(
        &self,
        request: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let name = request.model_spec.as_ref().map_or("", |s| &s.name);
        let mut guard = serving::track(&self.state, name, "grpc", "metadata");
        let result = self.metadata(request, &mut guard);
        finish(guard, &result);
        result.map(Response::new)
    }
}

impl Prediction {
    async fn run_predict(
        &self,
        request: PredictRequest,
        guard: &mut RequestGuard,
    ) -> Result<PredictResponse, Status> {
        let spec = model_spec(request.model_spec.as_ref())?;
        let model = serving::resolve(&self.state, &spec).map_err(status)?;
        guard.version(model.version);
        // Refused before the tensors are converted and images decoded when the queue stays full.
        let _admitted = model.pool.admit().await.map_err(status)?;
        let sig = model.api_signature();
        let picked = serving::select_outputs(sig, &request.output_filter).map_err(status)?;
        // What the tensors will take once decoded (a short typed field may claim a large shape).
        let size = request.inputs.values().map(claimed_bytes).sum::<usize>();
        let max_bytes = self.max_bytes;
        let inputs = if size > serving::DECODE_INLINE_MAX || model.serving.is_some() {
            let decoding = model.clone();
            serving::off_executor(move || decode_inputs(&decoding, request.inputs, max_bytes)).await
        } else {
            decode_inputs(&model, request.inputs, max_bytes)
        }
        .map_err(status)?;
        let outputs = serving::predict(&model, inputs).await.map_err(status)?;
        let outputs = picked
            .into_iter()
            .map(|i| match (sig.outputs.get(i), outputs.get(i)) {
                (Some(spec), Some(t)) => Ok((spec.name.clone(), tensor::encode(t, self.raw))),
                _ => Err(status(ApiError::Internal(format!(
                    "the model gave {} outputs, its signature lists {}",
                    outputs.len(),
                    sig.outputs.len()
                )))),
            })
            .collect::<Result<_, Status>>()?;
        Ok(PredictResponse {
            model_spec: Some(served_spec(&model, DEFAULT_SIGNATURE)),
            outputs,
        })
    }

    fn metadata(
        &self,
        request: GetModelMetadataRequest,
        guard: &mut RequestGuard,
    ) -> Result<GetModelMetadataResponse, Status> {
        let spec = model_spec(request.model_spec.as_ref())?;
        if request.metadata_field.is_empty() {
            return Err(status(ApiError::BadRequest(format!(
                "GetModelMetadataRequest must name at least one metadata_field; the one supported is '{SIGNATURE_DEF}'"
            ))));
        }
        if let Some(other) = request.metadata_field.iter().find(|f| *f != SIGNATURE_DEF) {
            return Err(status(ApiError::BadRequest(format!(
                "metadata_field '{other}' is not supported; the one supported is '{SIGNATURE_DEF}'"
            ))));
        }
        // The metadata covers every signature: signature_name plays no part, as in TF Serving.
        let spec = serving::ModelSpec {
            signature_name: "",
            ..spec
        };
        let model = serving::resolve(&self.state, &spec).map_err(status)?;
        guard.version(model.version);
        let map = SignatureDefMap {
            signature_def: HashMap::from([(
                DEFAULT_SIGNATURE.to_string(),
                signature_def(model.api_signature()),
            )]),
        };
        let any = prost_types::Any {
            type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap".into(),
            value: map.encode_to_vec(),
        };
        Ok(GetModelMetadataResponse {
            model_spec: Some(served_spec(&model, "")),
            metadata: HashMap::from([(SIGNATURE_DEF.to_string(), any)]),
        })
    }
}

/// The encoded size of a request tensor, or what its shape claims if that is more.
fn claimed_bytes(t: &TensorProto) -> usize {
    let elements = t.tensor_shape.as_ref().map_or(1, |s| {
        s.dim.iter().fold(1usize, |n, d| {
            n.saturating_mul(usize::try_from(d.size).unwrap_or(0))
        })
    });
    t.encoded_len().max(elements.saturating_mul(4))
}

/// The public signature as TF Serving's `SignatureDef` (method "tensorflow/serving/predict").
pub fn signature_def(sig: &Signature) -> SignatureDef {
    let infos = |specs: &[crate::signature::TensorSpec]| {
        specs
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    TensorInfo {
                        encoding: Some(tensor_info::Encoding::Name(s.name.clone())),
                        dtype: tensor::data_type(s.dtype) as i32,
                        tensor_shape: Some(tensor::shape_proto(s)),
                    },
                )
            })
            .collect()
    };
    SignatureDef {
        inputs: infos(&sig.inputs),
        outputs: infos(&sig.outputs),
        method_name: PREDICT_METHOD.into(),
    }
}

/// The request's tensors as the model's inputs: images for a model with an image signature,
/// else tensors checked against the signature (`serving::check_inputs`).
fn decode_inputs(
    model: &ServedModel,
    inputs: HashMap<String, TensorProto>,
    max_bytes: usize,
) -> Result<Vec<Tensor>, ApiError> {
    let mut named = Vec::with_capacity(inputs.len());
    if let Some(serving) = &model.serving {
        let name = &serving.input.name;
        let mut inputs = inputs.into_iter();
        let (key, proto) = match (inputs.next(), inputs.next()) {
            (Some(only), None) => only,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "the model takes one input, '{name}': a DT_STRING tensor of JPEG or PNG files (or DT_FLOAT [height, width, 3] pixels of 0-1)"
                )))
            }
        };
        if key != *name {
            return Err(ApiError::BadRequest(serving::unknown_input(
                &serving.public,
                &key,
            )));
        }
        let at = |e: String| ApiError::BadRequest(format!("input '{name}': {e}"));
        // The image count, before anything is decoded: a short string_val could claim millions.
        let dims = proto.tensor_shape.as_ref().map_or(&[][..], |s| &s.dim[..]);
        let count = match (proto.dtype == DataType::DtString as i32, dims) {
            (true, [n]) | (false, [n, _, _, _]) => usize::try_from(n.size).unwrap_or(0),
            _ => 1,
        };
        if count > serving::MAX_IMAGES_PER_REQUEST {
            return Err(at(format!(
                "{count} images in one request; the server takes at most {}: split the batch",
                serving::MAX_IMAGES_PER_REQUEST
            )));
        }
        let images = match tensor::decode(proto, max_bytes).map_err(at)? {
            Value::Bytes { shape, values } if shape.len() <= 1 => {
                return serving::image_batch(
                    serving,
                    &model.signature,
                    values.iter().map(|v| ImageSource::Encoded(v)).collect(),
                    |i, e| ApiError::BadRequest(format!("input '{name}'[{i}]: {e}")),
                )
                .map(|t| vec![t]);
            }
            Value::Bytes { shape, .. } => {
                return Err(at(format!(
                    "a DT_STRING image tensor holds one file per image: shape [n], got {shape:?}"
                )))
            }
            Value::Tensor(t) => serving::pixel_images(t).map_err(at)?,
        };
        return serving::image_batch(serving, &model.signature, images, |i, e| {
            ApiError::BadRequest(format!("input '{name}'[{i}]: {e}"))
        })
        .map(|t| vec![t]);
    }
    for (name, proto) in inputs {
        let at = |e: String| ApiError::BadRequest(format!("input '{name}': {e}"));
        let tensor = match tensor::decode(proto, max_bytes).map_err(at)? {
            Value::Tensor(t) => t,
            Value::Bytes { shape, values } => {
                let text = values
                    .into_iter()
                    .map(|v| {
                        String::from_utf8(v)
                            .map_err(|_| "a DT_STRING value is not UTF-8 text".to_string())
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(at)?;
                Tensor::new(shape, TensorData::String(text)).map_err(|e| at(e.to_string()))?
            }
        };
        named.push((name, tensor));
    }
    serving::check_inputs(model.api_signature(), named)
}
