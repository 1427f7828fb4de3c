//! Requests to a model with an image signature (`signature.toml`): each instance is an image,
//! `{"b64": "<JPEG or PNG>"}` or an HWC tensor of 0-1 floats, turned into the model's input.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use super::request::{JsonInput, NdArray, Scalar};
use crate::error::ApiError;
use crate::serving;
use crate::signature::{FloatImage, ImageSource, ServingSignature, Signature};
use crate::tensor::Tensor;

/// Standard base64, padding optional (clients differ on it).
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub use crate::serving::MAX_IMAGES_PER_REQUEST;

/// Row format: one image per instance.
pub fn from_instances(
    sig: &ServingSignature,
    model: &Signature,
    instances: &[JsonInput],
) -> Result<Tensor, ApiError> {
    if instances.is_empty() {
        return Err(ApiError::BadRequest(
            "'instances' is empty: send at least one image".into(),
        ));
    }
    let mut images = Vec::with_capacity(instances.len());
    for (i, instance) in instances.iter().enumerate() {
        let at = |e: String| ApiError::BadRequest(format!("instances[{i}]: {e}"));
        let value = named_value(sig, instance).map_err(at)?;
        match value {
            JsonInput::Tensor(t) if t.shape.len() == 4 => {
                return Err(at(format!(
                    "a 4-D tensor {:?} is a batch, but each instance is one image: send [height, width, 3] per instance, or the batch as {{\"inputs\": ...}}",
                    t.shape
                )))
            }
            _ => images.push(value),
        }
    }
    build(sig, model, &images, |i, e| {
        ApiError::BadRequest(format!("instances[{i}]: {e}"))
    })
}

/// Columnar format: `inputs` is one `{"b64"}` image, a list of them (`[{"b64": ...}, ...]`, one
/// per batch entry), or a `[batch, height, width, 3]` tensor; bare or under the input's name.
pub fn from_inputs(
    sig: &ServingSignature,
    model: &Signature,
    inputs: &JsonInput,
) -> Result<Tensor, ApiError> {
    let value = named_value(sig, inputs).map_err(ApiError::BadRequest)?;
    let split;
    let images: Vec<&JsonInput> = match value {
        JsonInput::Tensor(t) if t.shape.len() == 4 => {
            split = split_batch(t);
            split.iter().collect()
        }
        // Columnar binary values: one image per batch entry.
        JsonInput::B64List(list) => {
            split = list.iter().map(|b| JsonInput::B64(b.clone())).collect();
            split.iter().collect()
        }
        other => vec![other],
    };
    build(sig, model, &images, |i, e| {
        ApiError::BadRequest(if images.len() > 1 {
            format!("inputs[{i}]: {e}")
        } else {
            e
        })
    })
}

/// `{"image_bytes": ...}` (or the model's own input name) unwrapped; a bare value as is.
fn named_value<'a>(sig: &ServingSignature, value: &'a JsonInput) -> Result<&'a JsonInput, String> {
    let name = &sig.input.name;
    match value {
        JsonInput::Named(named) => match named.as_slice() {
            [(key, v)] if key == name => Ok(v),
            [(key, _)] => Err(serving::unknown_input(&sig.public, key)),
            _ => Err(format!(
                "the model takes one input, '{name}': send {{\"{name}\": {{\"b64\": ...}}}} or the image alone"
            )),
        },
        other => Ok(other),
    }
}

fn split_batch(t: &NdArray) -> Vec<JsonInput> {
    let n = t.shape[0];
    let per = t.data.len() / n.max(1);
    (0..n)
        .map(|i| {
            JsonInput::Tensor(NdArray {
                shape: t.shape[1..].to_vec(),
                data: t.data[i * per..(i + 1) * per].to_vec(),
            })
        })
        .collect()
}

fn build(
    sig: &ServingSignature,
    model: &Signature,
    images: &[&JsonInput],
    err: impl Fn(usize, String) -> ApiError,
) -> Result<Tensor, ApiError> {
    // Base64 first (it owns the bytes the sources borrow), then the shared image path.
    let mut decoded = Vec::with_capacity(images.len());
    for (i, image) in images.iter().enumerate() {
        decoded.push(match image {
            JsonInput::B64(text) => Some(decode_b64(text).map_err(|e| err(i, e))?),
            _ => None,
        });
    }
    let mut sources = Vec::with_capacity(images.len());
    for (i, (image, bytes)) in images.iter().zip(&decoded).enumerate() {
        sources.push(match (image, bytes) {
            (_, Some(bytes)) => ImageSource::Encoded(bytes),
            (JsonInput::Tensor(t), None) => ImageSource::Pixels(pixels(t).map_err(|e| err(i, e))?),
            _ => {
                return Err(err(
                    i,
                    "expected an image ({\"b64\": \"...\"} or a [height, width, 3] tensor), not an object".into(),
                ))
            }
        });
    }
    serving::image_batch(sig, model, sources, err)
}

fn decode_b64(text: &str) -> Result<Vec<u8>, String> {
    // Python's base64.encodebytes wraps lines: drop whitespace before decoding.
    let cleaned;
    let text = if text.bytes().any(|b| b.is_ascii_whitespace()) {
        cleaned = text
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect::<String>();
        cleaned.as_str()
    } else {
        text
    };
    if text.is_empty() {
        return Err("the b64 value is empty: it should hold a JPEG or PNG image".into());
    }
    B64.decode(text)
        .map_err(|e| format!("the b64 value is not valid base64 ({e})"))
}

/// An HWC tensor of 0-1 floats (what `np.array(image) / 255.0` gives).
fn pixels(t: &NdArray) -> Result<FloatImage, String> {
    let mut values = Vec::with_capacity(t.data.len());
    for s in &t.data {
        values.push(match *s {
            Scalar::F(v) => v,
            Scalar::I(v) => v as f64,
            Scalar::U(v) => v as f64,
            Scalar::B(_) => return Err("image tensor values must be numbers from 0 to 1".into()),
        });
    }
    serving::float_image(&t.shape, values)
}
