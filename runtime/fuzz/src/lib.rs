//! Bodies of the cargo fuzz targets (`fuzz_targets/`), one per decoder of what a client or an
//! operator hands the runtime: REST predict bodies per dtype, b64 images, `signature.toml`,
//! gRPC `TensorProto`s, Open Inference Protocol infer requests (REST and gRPC) and the model
//! config file. Each must answer an error, never panic, hang
//! or allocate without bound; where an encoder exists, what it writes must read back the same.
//!
//! Run one with `cargo fuzz run <target>` from `runtime/`, or all with `make fuzz`. Inputs that
//! once failed live in `regressions/<target>/` and are replayed before each run.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use prost::Message as _;
use runtime::grpc::tensor::{decode, encode, Value};
use runtime::proto::inference::ModelInferRequest;
use runtime::proto::tensorflow::TensorProto;
use runtime::rest::decode::{tensors_from_inputs, tensors_from_instances};
use runtime::rest::encode::outputs_json;
use runtime::rest::images;
use runtime::rest::request::{parse_predict_request, PredictRequest};
use runtime::signature::{DType, Dim, ServingSignature, Signature, TensorSpec};
use runtime::tensor::{raw, Tensor};

/// Every dtype a REST input can have; the first input byte picks one.
const DTYPES: [DType; 13] = runtime::tensor::ALL;

/// The byte budget a gRPC tensor may claim (the server passes its message limit).
const MAX_TENSOR_BYTES: usize = 1 << 20;

fn spec(name: &str, dtype: DType, shape: Vec<Dim>) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dtype,
        shape,
    }
}

/// `data[0]` picks the dtype (low 7 bits `% 13`) and, with its top bit, a second input; the rest is the
/// body of `POST /v1/models/m:predict`. Decoded tensors of a numeric or bool dtype are written
/// back as `{"outputs": ...}`, read again as `{"inputs": ...}` and must come out the same.
pub fn rest_predict(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let dtype = DTYPES[usize::from(selector & 0x7f) % DTYPES.len()];
    let mut inputs = vec![spec(
        "x",
        dtype,
        vec![Dim::Dynamic("batch".into()), Dim::Fixed(2)],
    )];
    if selector & 0x80 != 0 {
        inputs.push(spec(
            "y",
            dtype,
            vec![Dim::Dynamic("batch".into()), Dim::Dynamic("n".into())],
        ));
    }
    let sig = Signature {
        inputs,
        outputs: vec![],
    };
    let Ok(request) = parse_predict_request(body) else {
        return;
    };
    let Some(decoded) = tensors(&sig, &request) else {
        return;
    };
    if dtype == DType::String {
        // Written as b64 objects or text depending on content: no byte-exact round trip.
        return;
    }
    let as_outputs = Signature {
        inputs: vec![],
        outputs: sig.inputs.clone(),
    };
    let written = outputs_json(&as_outputs, &decoded).expect("decoded tensors must encode");
    let text = String::from_utf8(written).expect("the encoder writes UTF-8");
    let again = text.replacen("\"outputs\"", "\"inputs\"", 1);
    let request = parse_predict_request(again.as_bytes())
        .unwrap_or_else(|e| panic!("our own output does not parse ({e}): {again}"));
    let back = tensors(&sig, &request)
        .unwrap_or_else(|| panic!("our own output does not decode as {dtype:?}: {again}"));
    let rewritten = outputs_json(&as_outputs, &back).expect("decoded tensors must encode");
    assert_eq!(
        text,
        String::from_utf8_lossy(&rewritten),
        "a {dtype:?} round trip changed the values"
    );
}

fn tensors(sig: &Signature, request: &PredictRequest) -> Option<Vec<Tensor>> {
    match (&request.instances, &request.inputs) {
        (Some(instances), None) => tensors_from_instances(sig, instances).ok(),
        (None, Some(inputs)) => tensors_from_inputs(sig, inputs).ok(),
        _ => None,
    }
}

/// An image model small enough to fuzz quickly: `[batch, 3, 16, 16]` (NCHW) or
/// `[batch, 16, 16, 3]` (NHWC) float32 in, `[batch, 4]` logits out.
fn image_model(nhwc: bool) -> Signature {
    let batch = Dim::Dynamic("batch".into());
    let shape = if nhwc {
        vec![batch.clone(), Dim::Fixed(16), Dim::Fixed(16), Dim::Fixed(3)]
    } else {
        vec![batch.clone(), Dim::Fixed(3), Dim::Fixed(16), Dim::Fixed(16)]
    };
    Signature {
        inputs: vec![spec("images", DType::F32, shape)],
        outputs: vec![spec("logits", DType::F32, vec![batch, Dim::Fixed(4)])],
    }
}

fn image_signature(variant: u8) -> (ServingSignature, Signature) {
    let nhwc = variant & 1 != 0;
    let resize = ["shorter_side", "stretch"][usize::from(variant >> 1 & 1)];
    let filter = ["nearest", "bilinear", "bicubic", "lanczos3"][usize::from(variant >> 2 & 3)];
    let layout = if nhwc { "NHWC" } else { "NCHW" };
    let text = format!(
        "[input]\nname = \"image_bytes\"\nmodel_input = \"images\"\nkind = \"image\"\n\
         layout = \"{layout}\"\nsize = [16, 16]\nresize = \"{resize}\"\nfilter = \"{filter}\"\n\
         mean = [0.5, 0.5, 0.5]\nstd = [0.5, 0.5, 0.5]\n"
    );
    let model = image_model(nhwc);
    let sig = ServingSignature::parse(&text, Path::new("signature.toml"), &model)
        .unwrap_or_else(|e| panic!("the fuzz target's own signature is refused: {e}\n{text}"));
    (sig, model)
}

/// `data[0]` picks the image signature (layout, resize, filter) and how the rest is sent: its
/// top bit set, the rest is the text of the `b64` value; clear, the rest is the image file
/// itself (JPEG, PNG or anything), base64-encoded as a client would. Bits 4-5 pick the request
/// form: row (`instances`), columnar, columnar list, or named.
pub fn image_b64(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (sig, model) = image_signature(selector);
    let b64 = if selector & 0x80 != 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        B64.encode(rest)
    };
    let value = serde_json::json!({ "b64": b64 });
    let body = match selector >> 4 & 3 {
        0 => serde_json::json!({ "instances": [value] }),
        1 => serde_json::json!({ "inputs": value }),
        2 => serde_json::json!({ "inputs": [value, value] }),
        _ => serde_json::json!({ "inputs": { "image_bytes": [value] } }),
    };
    let body = body.to_string();
    let Ok(request) = parse_predict_request(body.as_bytes()) else {
        panic!("a well-formed image request does not parse: {body}");
    };
    let result = match (&request.instances, &request.inputs) {
        (Some(instances), None) => images::from_instances(&sig, &model, instances),
        (None, Some(inputs)) => images::from_inputs(&sig, &model, inputs),
        _ => unreachable!("the body has one of the two"),
    };
    if let Ok(tensor) = result {
        let n = tensor.shape().first().copied().unwrap_or(0);
        assert!(n >= 1, "an image batch of {:?}", tensor.shape());
        assert_eq!(tensor.shape().len(), 4, "image tensors are 4-D");
    }
}

/// The bytes (as UTF-8, lossily) are a `signature.toml`, checked against an image model and,
/// with `data[0]`'s low bit set, against a plain two-input model.
pub fn signature_toml(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let model = if selector & 1 == 0 {
        image_model(selector & 2 != 0)
    } else {
        Signature {
            inputs: vec![
                spec(
                    "x",
                    DType::F32,
                    vec![Dim::Dynamic("N".into()), Dim::Fixed(3)],
                ),
                spec("mask", DType::Bool, vec![Dim::Dynamic("N".into())]),
            ],
            outputs: vec![spec("y", DType::I64, vec![Dim::Dynamic("N".into())])],
        }
    };
    // In a folder that does not exist: a `labels` file named by the input is never found (the
    // parser refuses paths out of the version folder).
    let _ = ServingSignature::parse(&text, Path::new(NOWHERE), &model);
}

/// Where the fuzzed `signature.toml` claims to be.
const NOWHERE: &str = "/nonexistent-onnx-serving-fuzz/1/signature.toml";

/// The bytes are a protobuf `tensorflow.TensorProto` (a gRPC predict input). A tensor it decodes
/// to must encode (typed fields and `tensor_content` alike) and decode back the same.
pub fn tensor_proto(data: &[u8]) {
    let Ok(proto) = TensorProto::decode(data) else {
        return;
    };
    let Ok(Value::Tensor(tensor)) = decode(proto, MAX_TENSOR_BYTES) else {
        return;
    };
    for raw in [false, true] {
        let encoded = encode(&tensor, raw);
        let Ok(Value::Tensor(back)) = decode(encoded.clone(), usize::MAX) else {
            panic!("our own TensorProto (raw {raw}) does not decode: {encoded:?}");
        };
        assert_eq!(back.shape(), tensor.shape());
        // Compared as bytes: NaN != NaN, but its bits are kept.
        assert_eq!(
            encode(&back, raw).encode_to_vec(),
            encoded.encode_to_vec(),
            "a {:?} round trip (raw {raw}) changed the tensor",
            tensor.dtype()
        );
    }
}

/// The bytes (as UTF-8, lossily) are a `--model_config_file` (TF Serving's `ModelServerConfig`
/// in protobuf text format).
pub fn model_config(data: &[u8]) {
    let _ = runtime::models::config::parse(&String::from_utf8_lossy(data));
}

/// The bytes are an Open Inference Protocol infer request. First byte: bit 0 picks gRPC (the
/// rest is a protobuf `ModelInferRequest`) or REST; for REST, bit 1 says an
/// `Inference-Header-Content-Length` header comes with it, whose value is the next two bytes,
/// and the rest is the body. Every input that decodes must survive a round trip through the raw
/// layout (the binary extension's and `raw_input_contents`').
pub fn v2_infer(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let named = if flags & 1 == 1 {
        let Ok(request) = ModelInferRequest::decode(rest) else {
            return;
        };
        runtime::grpc::inference::tensor::inputs(request.inputs, request.raw_input_contents)
    } else {
        use runtime::rest::v2::decode::{inputs, parse_request, split_body};
        let (header, body) = match rest {
            [a, b, body @ ..] if flags & 2 == 2 => {
                (Some(u16::from_le_bytes([*a, *b]).to_string()), body)
            }
            body => (None, body),
        };
        let Ok((json, binary)) = split_body(body, header.as_deref()) else {
            return;
        };
        let Ok(request) = parse_request(json) else {
            return;
        };
        inputs(&request.inputs, binary)
    };
    let Ok(named) = named else {
        return;
    };
    for (_, value) in named {
        match value {
            Value::Tensor(t) => {
                let bytes = raw::to_le_bytes(t.data());
                let back = raw::from_le_bytes(t.dtype(), t.shape().to_vec(), &bytes)
                    .expect("our raw bytes read back");
                assert_eq!(
                    raw::to_le_bytes(back.data()),
                    bytes,
                    "a raw round trip changed the tensor"
                );
            }
            Value::Bytes { values, .. } => {
                let mut bytes = Vec::new();
                for v in &values {
                    bytes.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    bytes.extend_from_slice(v);
                }
                assert_eq!(
                    raw::bytes_elements(&bytes).expect("our BYTES read back"),
                    values
                );
            }
        }
    }
}
