//! The protocol-neutral serving path that REST (`rest`) and gRPC (`grpc`) both call: which model
//! a request names (here), its status (`status`), checked input tensors and images (`inputs`),
//! the run itself and the output filter (`predict`), and the request metrics (`observe`). Each
//! rule (signature name, version, shapes and dtypes, image limits) lives here once; each protocol
//! only turns its own wire format into [`Tensor`](crate::tensor::Tensor)s and maps [`ApiError`]
//! to its own status codes.

use std::sync::Arc;

use crate::error::ApiError;
use crate::models::{AppState, ModelEntry, Models, Servable, ServedModel};
use crate::signature::DEFAULT_SIGNATURE;

mod inputs;
mod observe;
mod predict;
pub mod repository;
mod status;
pub use crate::metrics::RequestGuard;
pub use inputs::{
    check_inputs, float_image, image_batch, missing_input, pixel_images, request_inputs,
    shape_mismatch, unknown_input, Value, MAX_IMAGES_PER_REQUEST,
};
pub use observe::{render_metrics, track};
pub use predict::{off_executor, predict, predict_only, select_outputs, DECODE_INLINE_MAX};
pub use status::{available_versions, ready, status};

/// Which model (and version) a request is for: TF Serving's `ModelSpec`.
#[derive(Clone, Copy, Debug)]
pub struct ModelSpec<'a> {
    pub name: &'a str,
    pub version: VersionChoice<'a>,
    /// Empty means `serving_default`.
    pub signature_name: &'a str,
}

impl<'a> ModelSpec<'a> {
    /// The latest version of `name`, default signature.
    pub fn latest(name: &'a str) -> Self {
        ModelSpec {
            name,
            version: VersionChoice::Latest,
            signature_name: "",
        }
    }
}

/// A version by number, by label, or the latest one served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionChoice<'a> {
    Latest,
    Number(u64),
    Label(&'a str),
}

impl VersionChoice<'_> {
    /// TF Serving's wording in "Servable not found for request: Specific(resnet, 2)".
    fn describe(&self, name: &str) -> String {
        match self {
            VersionChoice::Latest => format!("Latest({name})"),
            VersionChoice::Number(v) => format!("Specific({name}, {v})"),
            VersionChoice::Label(l) => format!("Labeled({name}, {l})"),
        }
    }
}

/// The model version a predict or metadata call runs on: NotFound for an unknown model or
/// version, BadRequest for an unknown label or a signature other than `serving_default`,
/// Unavailable while it loads or after it failed.
pub fn resolve(st: &AppState, spec: &ModelSpec<'_>) -> Result<Arc<ServedModel>, ApiError> {
    let model = {
        let models = st.models();
        let entry = model_entry(&models, spec)?;
        match spec.version {
            VersionChoice::Latest => match entry.latest_available() {
                Some(model) => model.clone(),
                None => return Err(none_available(spec, entry)),
            },
            VersionChoice::Number(n) => version_of(spec, entry, n)?,
            VersionChoice::Label(label) => {
                version_of(spec, entry, label_version(spec.name, entry, label)?)?
            }
        }
    };
    check_signature_name(spec.signature_name)?;
    Ok(model)
}

/// An ONNX model has one signature, `serving_default`; empty names it too.
pub fn check_signature_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name == DEFAULT_SIGNATURE {
        return Ok(());
    }
    Err(ApiError::BadRequest(format!(
        "unknown signature_name '{name}'; an ONNX model has one signature, '{DEFAULT_SIGNATURE}'"
    )))
}

/// A model spec must name its model: an empty name is a malformed request (INVALID_ARGUMENT, in
/// TF Serving's words), decided before any lookup.
pub fn require_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::BadRequest(
            "ModelSpec has no name specified.".into(),
        ));
    }
    Ok(())
}

/// The model `spec` names, or NotFound naming the models served.
fn model_entry<'m>(models: &'m Models, spec: &ModelSpec<'_>) -> Result<&'m ModelEntry, ApiError> {
    require_name(spec.name)?;
    models.get(spec.name).ok_or_else(|| {
        let served = match models.len() {
            0 => "no model yet".to_string(),
            1 => "model ".to_string() + &quoted(models.keys()),
            _ => "models ".to_string() + &quoted(models.keys()),
        };
        ApiError::NotFound(format!(
            "Servable not found for request: {}: this server serves {served}",
            spec.version.describe(spec.name)
        ))
    })
}

/// `'a', 'b'`.
fn quoted<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Version `n` of the model, if AVAILABLE; Unavailable while it loads or after it failed,
/// NotFound otherwise.
fn version_of(
    spec: &ModelSpec<'_>,
    entry: &ModelEntry,
    n: u64,
) -> Result<Arc<ServedModel>, ApiError> {
    match entry.versions.get(&n) {
        Some(Servable::Available(model)) => Ok(model.clone()),
        Some(Servable::Loading) => Err(loading(spec.name, n)),
        Some(Servable::End { error: Some(e) }) => Err(ApiError::Unavailable(format!(
            "model '{}' version {n} failed to load: {e}",
            spec.name
        ))),
        _ => Err(ApiError::NotFound(format!(
            "Servable not found for request: {}: {}",
            spec.version.describe(spec.name),
            available(entry)
        ))),
    }
}

fn loading(name: &str, n: u64) -> ApiError {
    ApiError::Unavailable(format!(
        "model '{name}' version {n} is still loading; retry shortly (GetModelStatus, or GET /v1/models/{name}, shows its state)"
    ))
}

/// "the versions available are [1, 2]" or "no version is available".
fn available(entry: &ModelEntry) -> String {
    let v: Vec<u64> = entry
        .versions
        .iter()
        .filter(|(_, s)| matches!(s, Servable::Available(_)))
        .map(|(v, _)| *v)
        .collect();
    match v.len() {
        0 => "no version is available".into(),
        1 => format!("the version available is {}", v[0]),
        _ => format!("the versions available are {v:?}"),
    }
}

/// Why a "latest" request finds no AVAILABLE version: a version loading, one that failed, or
/// none at all.
fn none_available(spec: &ModelSpec<'_>, entry: &ModelEntry) -> ApiError {
    let newest = |want: fn(&Servable) -> bool| {
        entry
            .versions
            .iter()
            .rev()
            .find(|(_, s)| want(s))
            .map(|(v, s)| (*v, s))
    };
    if let Some((v, _)) = newest(|s| matches!(s, Servable::Loading)) {
        return loading(spec.name, v);
    }
    if let Some((v, Servable::End { error: Some(e) })) =
        newest(|s| matches!(s, Servable::End { error: Some(_) }))
    {
        return ApiError::Unavailable(format!(
            "model '{}' failed to load: version {v}: {e}",
            spec.name
        ));
    }
    ApiError::NotFound(format!(
        "Servable not found for request: {}: no version is available",
        spec.version.describe(spec.name)
    ))
}

/// The version `label` names. An unknown label is the client's mistake in TF Serving
/// (INVALID_ARGUMENT, 400), not a missing servable.
fn label_version(name: &str, entry: &ModelEntry, label: &str) -> Result<u64, ApiError> {
    entry.labels.get(label).copied().ok_or_else(|| {
        let known = if entry.labels.is_empty() {
            "has no version labels".to_string()
        } else {
            format!("has labels {}", quoted(entry.labels.keys()))
        };
        ApiError::BadRequest(format!(
            "Unrecognized servable version label: {label}: model '{name}' {known}"
        ))
    })
}
