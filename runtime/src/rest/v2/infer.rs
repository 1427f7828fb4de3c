//! `POST /v2/models/{m}[/versions/{v}]/infer`: admitted before its body is read, decoded (JSON
//! or the binary tensor extension; off the async executor when large or an image), run through
//! `serving` like every other predict, and answered in JSON with the outputs the client asked
//! for, binary where it asked, within `--rest_api_timeout_in_ms`.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::decode;
use crate::error::ApiError;
use crate::models::{AppState, ServedModel};
use crate::rest::encode::FlatJson;
use crate::rest::json::write_json;
use crate::rest::{read_body, spec, within_deadline, Body};
use crate::serving::{self, RequestGuard, VersionChoice, DECODE_INLINE_MAX};
use crate::tensor::{raw, Tensor};

/// The binary tensor extension's header: the JSON part's length in bytes.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Runs one infer call under the request timeout, counted in the metrics as api `v2`.
pub(super) async fn infer(
    st: &AppState,
    name: &str,
    version: VersionChoice<'_>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut guard = serving::track(st, name, "v2", "infer");
    let call = infer_call(st, name, version, headers, body, &mut guard);
    let result = within_deadline(st.limits.request_timeout, call).await;
    guard.finish(&result);
    result
}

async fn infer_call(
    st: &AppState,
    name: &str,
    version: VersionChoice<'_>,
    headers: HeaderMap,
    body: Body,
    guard: &mut RequestGuard,
) -> Result<Response, ApiError> {
    let model = serving::resolve(st, &spec(name, version))?;
    guard.version(model.version);
    // Refused before the body is even read when the queue stays full: cheap under a flood.
    let _admitted = model.pool.admit().await?;
    let header_length = match headers.get(HEADER_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::BadRequest("Inference-Header-Content-Length is not a number".into())
                })?
                .to_string(),
        ),
        None => None,
    };
    let body = read_body(body, st.limits.max_body_bytes).await?;
    let (inputs, answer) = if body.len() > DECODE_INLINE_MAX || model.serving.is_some() {
        let decoding = model.clone();
        serving::off_executor(move || decode_infer(&decoding, &body, header_length.as_deref()))
            .await?
    } else {
        decode_infer(&model, &body, header_length.as_deref())?
    };
    let outputs = serving::predict(&model, inputs).await?;
    respond(&model, answer, &outputs)
}

/// What the response must hold, from the request: its id, and which outputs in which form.
struct Answer {
    id: Option<String>,
    /// Output index (in the signature's order) and whether it goes in binary.
    outputs: Vec<(usize, bool)>,
}

fn decode_infer(
    model: &ServedModel,
    body: &[u8],
    header_length: Option<&str>,
) -> Result<(Vec<Tensor>, Answer), ApiError> {
    let (json, binary) = decode::split_body(body, header_length)?;
    let request = decode::parse_request(json)?;
    let named = decode::inputs(&request.inputs, binary)?;
    let sig = model.api_signature();
    let all_binary = decode::flag(&request.parameters, "binary_data_output")?;
    let outputs = match request.outputs.as_deref() {
        // Absent or empty: every output, as over gRPC.
        None | Some([]) => (0..sig.outputs.len()).map(|i| (i, all_binary)).collect(),
        Some(wanted) => {
            let names: Vec<String> = wanted.iter().map(|o| o.name.clone()).collect();
            let picked = serving::select_outputs(sig, &names)?;
            let binary = wanted
                .iter()
                .map(|o| match o.parameters.get("binary_data") {
                    Some(_) => decode::flag(&o.parameters, "binary_data"),
                    None => Ok(all_binary),
                })
                .collect::<Result<Vec<bool>, ApiError>>()?;
            picked.into_iter().zip(binary).collect()
        }
    };
    let tensors = serving::request_inputs(model, named)?;
    Ok((
        tensors,
        Answer {
            id: request.id,
            outputs,
        },
    ))
}

#[derive(Serialize)]
struct InferResponse<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    model_name: &'a str,
    model_version: String,
    outputs: Vec<ResponseOutput<'a>>,
}

#[derive(Serialize)]
struct ResponseOutput<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<FlatJson<'a>>,
}

/// The response: JSON, then the binary outputs' bytes in output order with the header that
/// says where the JSON ends.
fn respond(model: &ServedModel, answer: Answer, outputs: &[Tensor]) -> Result<Response, ApiError> {
    let sig = model.api_signature();
    let mut binary = Vec::new();
    let mut listed = Vec::with_capacity(answer.outputs.len());
    for &(i, as_binary) in &answer.outputs {
        let (spec, tensor) = sig
            .outputs
            .get(i)
            .zip(outputs.get(i))
            .ok_or_else(|| ApiError::Internal(format!("the model returned no output {i}")))?;
        let (parameters, data) = if as_binary {
            let bytes = raw::to_le_bytes(tensor.data());
            let size = bytes.len();
            binary.push(bytes);
            (Some(json!({ "binary_data_size": size })), None)
        } else {
            (None, Some(FlatJson(tensor)))
        };
        listed.push(ResponseOutput {
            name: &spec.name,
            datatype: tensor.dtype().v2_name(),
            shape: tensor.shape(),
            parameters,
            data,
        });
    }
    let mut body = write_json(&InferResponse {
        id: answer.id.as_deref(),
        model_name: &model.name,
        model_version: model.version.to_string(),
        outputs: listed,
    })?;
    if binary.is_empty() {
        return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
    }
    let json_length = HeaderValue::from(body.len());
    for bytes in binary {
        body.extend_from_slice(&bytes);
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::HeaderName::from_static(HEADER_LENGTH), json_length),
        ],
        body,
    )
        .into_response())
}
