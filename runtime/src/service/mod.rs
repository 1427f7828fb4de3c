//! The protocol-neutral serving path that REST (`api`) and gRPC (`grpc`) both call: which model
//! a request names, its status, checked input tensors, images, the run itself and the output
//! filter. Each rule (signature name, version, shapes and dtypes, image limits) lives here once;
//! each protocol only turns its own wire format into [`Tensor`]s and maps [`ApiError`] to its
//! own status codes.

use std::sync::Arc;

use crate::error::ApiError;
use crate::metrics::metrics;
use crate::model::serving::{FloatImage, ImageSource, ServingSignature};
use crate::model::signature::DEFAULT_SIGNATURE;
use crate::model::{Signature, TensorSpec};
use crate::state::{AppState, ModelEntry, Models, Servable, ServedModel};
use crate::tensor::Tensor;

mod status;
pub use status::{status, ServableState, VersionStatus};

/// Images one request may carry: each becomes a model-sized float tensor (0.6 MB at 224x224),
/// and small JPEGs could otherwise turn a 64 MB body into gigabytes.
pub const MAX_IMAGES_PER_REQUEST: usize = 64;

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

/// The model `spec` names, or NotFound naming the models served.
fn model_entry<'m>(models: &'m Models, spec: &ModelSpec<'_>) -> Result<&'m ModelEntry, ApiError> {
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

/// The error text for an input name the signature lacks.
pub fn unknown_input(sig: &Signature, name: &str) -> String {
    format!(
        "unknown input '{name}'; the model takes {}",
        sig.input_names()
    )
}

/// The error text for a signature input the request lacks.
pub fn missing_input(sig: &Signature, spec: &TensorSpec) -> String {
    format!(
        "input '{}' is missing; the model takes {}",
        spec.name,
        sig.input_names()
    )
}

/// Classify, Regress and the like: TF Serving methods that need TensorFlow's classification or
/// regression signatures. `predict` names the method to use instead, in the protocol's terms.
pub fn predict_only(method: &str, predict: &str) -> ApiError {
    ApiError::NotImplemented(format!(
        "{method} needs a TensorFlow classification or regression signature; ONNX models are served through {predict}"
    ))
}

/// Request bodies (and claimed tensor sizes) above this many bytes are decoded on a blocking
/// thread, not on the async executor.
pub const DECODE_INLINE_MAX: usize = 64 * 1024;

/// Orders named input tensors as the signature lists them, checking names, dtypes and shapes:
/// every error names the input, what it expects and what it got.
pub fn check_inputs(
    sig: &Signature,
    named: Vec<(String, Tensor)>,
) -> Result<Vec<Tensor>, ApiError> {
    if let Some((unknown, _)) = named
        .iter()
        .find(|(k, _)| !sig.inputs.iter().any(|s| s.name == *k))
    {
        return Err(ApiError::BadRequest(unknown_input(sig, unknown)));
    }
    let mut named: Vec<Option<(String, Tensor)>> = named.into_iter().map(Some).collect();
    sig.inputs
        .iter()
        .map(|spec| {
            let tensor = named
                .iter_mut()
                .find(|slot| slot.as_ref().is_some_and(|(k, _)| *k == spec.name))
                .and_then(Option::take)
                .map(|(_, t)| t)
                .ok_or_else(|| ApiError::BadRequest(missing_input(sig, spec)))?;
            if tensor.dtype() != spec.dtype {
                return Err(ApiError::BadRequest(format!(
                    "input '{}' is {} ({}), got {} ({})",
                    spec.name,
                    spec.dtype,
                    spec.dtype.tf_name(),
                    tensor.dtype(),
                    tensor.dtype().tf_name()
                )));
            }
            if !spec.accepts_shape(tensor.shape()) {
                return Err(shape_mismatch(spec, tensor.shape()));
            }
            Ok(tensor)
        })
        .collect()
}

/// The error for a tensor whose shape `spec` does not take.
pub fn shape_mismatch(spec: &TensorSpec, got: &[usize]) -> ApiError {
    ApiError::BadRequest(format!(
        "input '{}' expects shape {} ({} dimensions, -1 = any size), got {:?}",
        spec.name,
        spec.shape_string(),
        spec.shape.len(),
        got
    ))
}

/// The model input for a batch of images (encoded JPEG/PNG or 0-1 pixels), decoded, resized
/// and normalized as `signature.toml` says. `err(i, why)` words the error for image `i`.
pub fn image_batch(
    sig: &ServingSignature,
    model: &Signature,
    images: Vec<ImageSource<'_>>,
    err: impl Fn(usize, String) -> ApiError,
) -> Result<Tensor, ApiError> {
    if images.is_empty() {
        return Err(ApiError::BadRequest("send at least one image".into()));
    }
    if images.len() > MAX_IMAGES_PER_REQUEST {
        return Err(ApiError::BadRequest(format!(
            "{} images in one request; the server takes at most {MAX_IMAGES_PER_REQUEST}: split the batch",
            images.len()
        )));
    }
    let input = &sig.input;
    let shape = input.model_shape(images.len());
    let spec = &model.inputs[input.model_input];
    if !spec.accepts_shape(&shape) {
        return Err(ApiError::BadRequest(format!(
            "the model takes {} image(s) per request (input '{}' is {}), got {}",
            spec.shape.first().and_then(|d| d.fixed()).unwrap_or(1),
            spec.name,
            spec.shape_string(),
            images.len()
        )));
    }
    let mut data = Vec::with_capacity(shape.iter().product());
    for (i, source) in images.into_iter().enumerate() {
        input.preprocess(source, &mut data).map_err(|e| err(i, e))?;
    }
    Tensor::from_vec(shape.to_vec(), data)
        .map_err(|e| ApiError::Internal(format!("cannot build the image batch: {e}")))
}

/// One HWC image of 0-1 floats (what `np.array(image) / 255.0` gives) from its shape and values.
pub fn float_image(
    shape: &[usize],
    values: impl IntoIterator<Item = f64>,
) -> Result<FloatImage, String> {
    let [h, w, c] = shape[..] else {
        return Err(format!(
            "an image tensor is [height, width, 3] with values 0-1 (or send the JPEG or PNG file itself); got shape {shape:?}"
        ));
    };
    if c != 3 || h == 0 || w == 0 {
        return Err(format!(
            "an image tensor is [height, width, 3] (RGB) with values 0-1; got shape {shape:?}"
        ));
    }
    let mut data = Vec::with_capacity(h * w * 3);
    for v in values {
        if !(0.0..=1.0).contains(&v) {
            return Err(format!(
                "image tensor values must be 0-1 (pixel / 255); got {v}"
            ));
        }
        data.push(v as f32);
    }
    if data.len() != h * w * 3 {
        return Err(format!(
            "an image of shape {shape:?} needs {} values, got {}",
            h * w * 3,
            data.len()
        ));
    }
    Ok(FloatImage {
        width: w as u32,
        height: h as u32,
        data,
    })
}

/// Runs the model on checked inputs; with a class signature, post-processes its raw output into
/// the public outputs. The result follows `model.api_signature().outputs`.
pub async fn predict(model: &ServedModel, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ApiError> {
    let (mut outputs, took) = model.pool.run(inputs).await?;
    metrics().engine_run(&model.name, model.version, model.engine.name(), took);
    if let Some(post) = model.serving.as_ref().and_then(|s| s.output.as_ref()) {
        outputs = post
            .postprocess(&outputs[post.model_output])
            .map_err(ApiError::Internal)?;
    }
    Ok(outputs)
}

/// The indices of the outputs `filter` names, in its order (every output when it is empty);
/// BadRequest for a name the signature lacks or a repeated one.
pub fn select_outputs(sig: &Signature, filter: &[String]) -> Result<Vec<usize>, ApiError> {
    if filter.is_empty() {
        return Ok((0..sig.outputs.len()).collect());
    }
    let mut picked = Vec::with_capacity(filter.len());
    for name in filter {
        let i = sig
            .outputs
            .iter()
            .position(|s| s.name == *name)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "output_filter names '{name}', which is not an output; the model's outputs are {}",
                    sig.output_names()
                ))
            })?;
        if picked.contains(&i) {
            return Err(ApiError::BadRequest(format!(
                "output_filter names '{name}' twice"
            )));
        }
        picked.push(i);
    }
    Ok(picked)
}

/// Runs CPU-heavy request work (image decoding, large bodies) on the blocking pool, off the
/// async executor, at most one per core at a time: more would only hold more decoded images in
/// memory, not finish sooner.
pub async fn off_executor<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    static DECODERS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    let decoders = DECODERS.get_or_init(|| {
        Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        ))
    });
    // The turn goes with the work: a request dropped meanwhile (client gone, timeout) keeps
    // its core until its decoding ends.
    let turn = decoders
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiError::Internal(format!("request decoding stopped: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let done = work();
        drop(turn);
        done
    })
    .await
    .map_err(|e| ApiError::Internal(format!("request decoding stopped: {e}")))?
}
