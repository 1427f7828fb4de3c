//! Request tensors checked against the model's signature (names, dtypes, shapes), and batches of
//! images turned into the model's input as `signature.toml` says. Every error names the input,
//! what it expects and what it got.

use crate::error::ApiError;
use crate::models::ServedModel;
use crate::signature::{FloatImage, ImageSource, ServingSignature, Signature, TensorSpec};
use crate::tensor::{Tensor, TensorData};

/// Images one request may carry: each becomes a model-sized float tensor (0.6 MB at 224x224),
/// and small JPEGs could otherwise turn a 64 MB body into gigabytes.
pub const MAX_IMAGES_PER_REQUEST: usize = 64;

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
                    "input '{}' is {} ({}, {}), got {} ({}, {})",
                    spec.name,
                    spec.dtype,
                    spec.dtype.tf_name(),
                    spec.dtype.v2_name(),
                    tensor.dtype(),
                    tensor.dtype().tf_name(),
                    tensor.dtype().v2_name()
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

/// Float pixels of 0-1: one `[height, width, 3]` image or a `[n, height, width, 3]` batch
/// (float32 or float64), as images for an image signature.
pub fn pixel_images(t: Tensor) -> Result<Vec<ImageSource<'static>>, String> {
    let values: Vec<f64> = match t.data() {
        TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::F64(v) => v.clone(),
        _ => {
            return Err(format!(
                "an image is a string (bytes) tensor of JPEG or PNG files, or float pixels of 0-1; got {} ({}, {})",
                t.dtype(),
                t.dtype().tf_name(),
                t.dtype().v2_name()
            ))
        }
    };
    let shape = t.shape();
    let (n, image) = match shape.len() {
        3 => (1, shape),
        4 if shape[0] > MAX_IMAGES_PER_REQUEST => {
            return Err(format!(
                "{} images in one request; the server takes at most {MAX_IMAGES_PER_REQUEST}: split the batch",
                shape[0]
            ))
        }
        4 => (shape[0], &shape[1..]),
        _ => {
            return Err(format!(
                "pixels are [height, width, 3] or [n, height, width, 3]; got shape {shape:?}"
            ))
        }
    };
    let per: usize = image.iter().product();
    (0..n)
        .map(|i| {
            let rows = values[i * per..(i + 1) * per].iter().copied();
            float_image(image, rows).map(ImageSource::Pixels)
        })
        .collect()
}

/// A decoded request tensor. String/BYTES tensors stay bytes: image files are not text.
#[derive(Debug)]
pub enum Value {
    Tensor(Tensor),
    Bytes {
        shape: Vec<usize>,
        values: Vec<Vec<u8>>,
    },
}

/// The model's inputs from a request's named values, in the Open Inference Protocol's terms:
/// for an image signature its one input (BYTES holding JPEG or PNG files, shape `[n]`, or float
/// pixels of 0-1); otherwise tensors checked against the signature, BYTES read as UTF-8 text.
pub fn request_inputs(
    model: &ServedModel,
    named: Vec<(String, Value)>,
) -> Result<Vec<Tensor>, ApiError> {
    match &model.serving {
        Some(serving) => image_input(model, serving, named).map(|t| vec![t]),
        None => check_inputs(model.api_signature(), text_inputs(named)?),
    }
}

/// BYTES inputs of a model without an image signature are text, as ONNX string tensors are.
fn text_inputs(named: Vec<(String, Value)>) -> Result<Vec<(String, Tensor)>, ApiError> {
    named
        .into_iter()
        .map(|(name, value)| {
            let tensor = match value {
                Value::Tensor(t) => t,
                Value::Bytes { shape, values } => {
                    let text = values
                        .into_iter()
                        .map(String::from_utf8)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| {
                            ApiError::BadRequest(format!(
                                "input '{name}': a BYTES value is not UTF-8 text, which the model's string input needs"
                            ))
                        })?;
                    Tensor::new(shape, TensorData::String(text))
                        .map_err(|e| ApiError::BadRequest(format!("input '{name}': {e}")))?
                }
            };
            Ok((name, tensor))
        })
        .collect()
}

/// An image signature's one input.
fn image_input(
    model: &ServedModel,
    serving: &ServingSignature,
    named: Vec<(String, Value)>,
) -> Result<Tensor, ApiError> {
    let name = &serving.input.name;
    let mut named = named.into_iter();
    let (key, value) = match (named.next(), named.next()) {
        (Some(only), None) => only,
        _ => {
            return Err(ApiError::BadRequest(format!(
                "the model takes one input, '{name}': BYTES holding JPEG or PNG files (or FP32 [height, width, 3] pixels of 0-1)"
            )))
        }
    };
    if key != *name {
        return Err(ApiError::BadRequest(unknown_input(&serving.public, &key)));
    }
    let at = |e: String| ApiError::BadRequest(format!("input '{name}': {e}"));
    let err = |i: usize, e: String| ApiError::BadRequest(format!("input '{name}'[{i}]: {e}"));
    match value {
        Value::Bytes { shape, values } if shape.len() <= 1 => image_batch(
            serving,
            &model.signature,
            values.iter().map(|v| ImageSource::Encoded(v)).collect(),
            err,
        ),
        Value::Bytes { shape, .. } => Err(at(format!(
            "a BYTES image input holds one file per image: shape [n], got {shape:?}"
        ))),
        Value::Tensor(t) => {
            let images = pixel_images(t).map_err(at)?;
            image_batch(serving, &model.signature, images, err)
        }
    }
}
