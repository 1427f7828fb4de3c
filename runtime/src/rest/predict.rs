//! A predict call over REST: admitted before its body is read, decoded (off the async executor
//! when large or an image), run through `serving`, and answered in the request's format (rows or
//! columns), all within `--rest_api_timeout_in_ms`.

use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::request::parse_predict_request;
use super::{decode, encode, images, spec, within_deadline, Body};
use crate::error::ApiError;
use crate::models::{AppState, ServedModel};
use crate::serving::{self, RequestGuard, VersionChoice, DECODE_INLINE_MAX};
use crate::tensor::Tensor;

/// `POST .../{name}:{method}`: only `predict` runs; `classify` and `regress` are explained.
pub(super) async fn call(
    st: &AppState,
    name: &str,
    version: VersionChoice<'_>,
    method: &str,
    body: Body,
) -> Result<Response, ApiError> {
    let label = match method {
        "predict" => "predict",
        "classify" => "classify",
        "regress" => "regress",
        _ => "other",
    };
    let mut guard = serving::track(st, name, "rest", label);
    let call = predict_call(st, name, version, method, body, &mut guard);
    let result = within_deadline(st.limits.request_timeout, call).await;
    guard.finish(&result);
    result
}

async fn predict_call(
    st: &AppState,
    name: &str,
    version: VersionChoice<'_>,
    method: &str,
    body: Body,
    guard: &mut RequestGuard,
) -> Result<Response, ApiError> {
    match method {
        "predict" => {}
        "classify" | "regress" => {
            return Err(serving::predict_only(
                &format!(":{method}"),
                &format!(":predict (POST /v1/models/{name}:predict)"),
            ))
        }
        other => {
            return Err(ApiError::NotFound(format!(
                "unknown method ':{other}'; ONNX models are served through :predict"
            )))
        }
    }
    let model = serving::resolve(st, &spec(name, version))?;
    guard.version(model.version);
    // Refused before the body is even read when the queue stays full: cheap under a flood.
    let _admitted = model.pool.admit().await?;
    let body = read_body(body, st.limits.max_body_bytes).await?;
    // Image decoding takes milliseconds: never on the async executor.
    let (inputs, format) = if body.len() > DECODE_INLINE_MAX || model.serving.is_some() {
        let decoding = model.clone();
        serving::off_executor(move || decode_predict(&decoding, &body)).await?
    } else {
        decode_predict(&model, &body)?
    };
    let outputs = serving::predict(&model, inputs).await?;
    let sig = model.api_signature();
    let json = match format {
        Format::Rows { batch } => encode::predictions_json(sig, &outputs, batch)?,
        Format::Columns => encode::outputs_json(sig, &outputs)?,
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// Which of TF Serving's two request formats the client used; the response follows it.
enum Format {
    Rows { batch: usize },
    Columns,
}

fn decode_predict(model: &ServedModel, body: &[u8]) -> Result<(Vec<Tensor>, Format), ApiError> {
    let request = parse_predict_request(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON request: {e}")))?;
    serving::check_signature_name(request.signature_name.as_deref().unwrap_or_default())?;
    if let Some(serving) = &model.serving {
        return match (&request.instances, &request.inputs) {
            (Some(instances), None) => Ok((
                vec![images::from_instances(
                    serving,
                    &model.signature,
                    instances,
                )?],
                Format::Rows {
                    batch: instances.len(),
                },
            )),
            (None, Some(inputs)) => Ok((
                vec![images::from_inputs(serving, &model.signature, inputs)?],
                Format::Columns,
            )),
            _ => Err(format_error(request.instances.is_some())),
        };
    }
    match (request.instances, request.inputs) {
        (Some(instances), None) => {
            let tensors = decode::tensors_from_instances(&model.signature, &instances)?;
            Ok((
                tensors,
                Format::Rows {
                    batch: instances.len(),
                },
            ))
        }
        (None, Some(inputs)) => Ok((
            decode::tensors_from_inputs(&model.signature, &inputs)?,
            Format::Columns,
        )),
        (both, _) => Err(format_error(both.is_some())),
    }
}

fn format_error(both: bool) -> ApiError {
    ApiError::BadRequest(if both {
        "send either 'instances' (row format) or 'inputs' (columnar format), not both".into()
    } else {
        "the request needs an 'instances' (row format) or an 'inputs' (columnar format) key".into()
    })
}

/// The whole body, up to `limit` bytes (decompressed): 413 past it, 400 if it cannot be read
/// (the connection broke, a gzip body is damaged).
pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return ApiError::PayloadTooLarge(format!(
                    "the request body is larger than the server's limit of {limit} bytes (--max_body_bytes)"
                ));
            }
            source = err.source();
        }
        ApiError::BadRequest(format!("cannot read the request body: {e}"))
    })
}
