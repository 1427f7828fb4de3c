//! Protocol overhead at batch 1, every protocol on one in-process server beside the engine's own
//! run: TF Serving's REST (JSON) and gRPC (`tensor_content`, DT_STRING files), and the Open
//! Inference Protocol's REST with the binary tensor extension (what tritonclient.http sends),
//! REST JSON, and gRPC `raw_input_contents` (what tritonclient.grpc sends). Each round runs the
//! engine (and, for an image signature, the image's preprocessing alone), then every request, so
//! machine noise hits all alike.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use runtime::engine::EngineKind;
use runtime::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use runtime::proto::inference::model_infer_request::InferInputTensor;
use runtime::proto::inference::ModelInferRequest;
use runtime::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use runtime::proto::tensorflow::serving::PredictRequest;
use runtime::serving::{float_image, image_batch};
use runtime::signature::{ImageSource, ServingSignature, Signature};
use serde_json::json;

use super::grpc::{bytes_tensor, float_tensor, json_numbers, request};
use super::{engine_and_served, ms, nhwc_body, p50, random_input, request_body, Client};

/// Per protocol (TF REST, TF gRPC, V2 binary, V2 JSON, V2 gRPC), the round trips of one body.
type Times = Vec<Vec<Duration>>;

/// The engine runs, each body's preprocessing times (empty without an image), and each
/// body's round trips.
type Rounds = (Vec<Duration>, Vec<Vec<Duration>>, Vec<Times>);

/// What an image signature does to a body's image before the engine runs: decode (a JPEG), or
/// take float pixels; then resize, crop and normalize.
enum Image {
    Jpeg(Vec<u8>),
    Pixels(Vec<f32>),
}

impl Image {
    /// Times the preprocessing of this image into the model's input, as the server runs it.
    fn preprocess(&self, sig: &ServingSignature, model: &Signature) -> Result<Duration> {
        let started = Instant::now();
        let source = match self {
            Image::Jpeg(bytes) => ImageSource::Encoded(bytes),
            Image::Pixels(values) => ImageSource::Pixels(
                float_image(&[224, 224, 3], values.iter().map(|&v| f64::from(v)))
                    .map_err(anyhow::Error::msg)?,
            ),
        };
        image_batch(sig, model, vec![source], |_, e| {
            runtime::error::ApiError::BadRequest(e)
        })
        .map_err(|e| anyhow::anyhow!("preprocessing: {e}"))?;
        Ok(started.elapsed())
    }
}

/// One body in every protocol; `v2_json` is None where JSON cannot carry it (JPEG bytes).
struct Bodies {
    label: String,
    /// The image an image signature preprocesses, if any.
    image: Option<Image>,
    tf_rest: Vec<u8>,
    tf_grpc: PredictRequest,
    v2_binary: (Vec<u8>, usize),
    v2_json: Option<Vec<u8>>,
    v2_grpc: ModelInferRequest,
}

/// V2 REST with the binary extension: the JSON header (outputs asked in binary, as
/// tritonclient.http does by default) and the raw bytes; returns the body and the header length.
fn v2_binary(input: &str, datatype: &str, shape: &[i64], raw: &[u8]) -> (Vec<u8>, usize) {
    let header = json!({
        "inputs": [{"name": input, "shape": shape, "datatype": datatype,
                    "parameters": {"binary_data_size": raw.len()}}],
        "parameters": {"binary_data_output": true},
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(raw);
    (body, header.len())
}

fn v2_grpc(
    model: &str,
    input: &str,
    datatype: &str,
    shape: &[i64],
    raw: Vec<u8>,
) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: input.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            ..Default::default()
        }],
        raw_input_contents: vec![raw],
        ..Default::default()
    }
}

fn float_bodies(
    label: &str,
    model: &str,
    input: &str,
    values: &[f32],
    shape: &[i64],
    tf_rest: Vec<u8>,
) -> Bodies {
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let v2_json =
        json!({"inputs": [{"name": input, "shape": shape, "datatype": "FP32", "data": values}]});
    Bodies {
        label: label.into(),
        image: None,
        tf_rest,
        tf_grpc: request(model, input, float_tensor(values, shape)),
        v2_binary: v2_binary(input, "FP32", shape, &raw),
        v2_json: Some(v2_json.to_string().into_bytes()),
        v2_grpc: v2_grpc(model, input, "FP32", shape, raw),
    }
}

/// Table rows for the model in `dir` on engine `kind`.
pub async fn rows(
    dir: &Path,
    name: &str,
    kind: EngineKind,
    threads: usize,
    n: usize,
) -> Result<String> {
    let (direct, served) = engine_and_served(dir, kind, threads)?;
    let image_model = served.serving.is_some();
    let input = random_input(&served.signature)?;
    let input_name = served.signature.inputs[0].name.clone();
    let preprocessing = served
        .serving
        .clone()
        .map(|s| (s, served.signature.clone()));
    let (rest_port, channel) = super::grpc::serve_both(name, served).await?;
    let mut tf_client = PredictionServiceClient::new(channel.clone());
    let mut v2_client = GrpcInferenceServiceClient::new(channel);

    let bodies: Vec<Bodies> = if image_model {
        let jpeg =
            std::fs::read(dir.with_file_name("cat.jpg")).context("cat.jpg (make bench-models)")?;
        let mut bytes = (jpeg.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&jpeg);
        let rest_pixels = nhwc_body();
        let pixels = json_numbers(&rest_pixels)?;
        vec![
            Bodies {
                label: "cat JPEG".into(),
                image: Some(Image::Jpeg(jpeg.clone())),
                tf_rest: request_body(dir, true, &input)?,
                tf_grpc: request(name, "image_bytes", bytes_tensor(jpeg)),
                v2_binary: v2_binary("image_bytes", "BYTES", &[1], &bytes),
                v2_json: None,
                v2_grpc: v2_grpc(name, "image_bytes", "BYTES", &[1], bytes),
            },
            Bodies {
                image: Some(Image::Pixels(pixels.clone())),
                ..float_bodies(
                    "1x224x224x3 float pixels",
                    name,
                    "image_bytes",
                    &pixels,
                    &[1, 224, 224, 3],
                    rest_pixels,
                )
            },
        ]
    } else {
        let values = input
            .as_slice::<f32>()
            .context("the input is not float32")?;
        let dims: Vec<i64> = input.shape().iter().map(|&d| d as i64).collect();
        let label = dims
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        vec![float_bodies(
            &format!("{label} float tensor"),
            name,
            &input_name,
            values,
            &dims,
            request_body(dir, false, &input)?,
        )]
    };
    let labels: Vec<String> = bodies.iter().map(|b| b.label.clone()).collect();
    let tf_path = format!("/v1/models/{name}:predict");
    let v2_path = format!("/v2/models/{name}/infer");
    let mut runner = direct.backend.runner().map_err(anyhow::Error::msg)?;
    let handle = tokio::runtime::Handle::current();
    const CALLS: usize = 5;

    let (engine_times, prep_times, times) = tokio::task::spawn_blocking({
        let bodies_len = bodies.len();
        move || -> Result<Rounds> {
            let mut http = Client::connect(rest_port)?;
            let mut call = |b: &Bodies, which: usize| -> Result<Option<Duration>> {
                let started = Instant::now();
                let ok = match which {
                    0 => http
                        .post(&tf_path, &b.tf_rest)?
                        .starts_with(b"{\"predictions\""),
                    1 => !handle
                        .block_on(tf_client.predict(b.tf_grpc.clone()))
                        .map_err(|s| anyhow::anyhow!("TF gRPC Predict: {s:?}"))?
                        .into_inner()
                        .outputs
                        .is_empty(),
                    2 => {
                        let (body, header) = &b.v2_binary;
                        let length = [("Inference-Header-Content-Length", header.to_string())];
                        http.post_with(&v2_path, body, &length)?
                            .starts_with(b"{\"model_name\"")
                    }
                    3 => match &b.v2_json {
                        Some(body) => http.post(&v2_path, body)?.starts_with(b"{\"model_name\""),
                        None => return Ok(None),
                    },
                    _ => !handle
                        .block_on(v2_client.model_infer(b.v2_grpc.clone()))
                        .map_err(|s| anyhow::anyhow!("V2 ModelInfer: {s:?}"))?
                        .into_inner()
                        .raw_output_contents
                        .is_empty(),
                };
                let took = started.elapsed();
                if !ok {
                    bail!("protocol {which} answered without outputs for {}", b.label);
                }
                Ok(Some(took))
            };
            for b in &bodies {
                for which in 0..CALLS {
                    call(b, which)?;
                }
            }
            let mut engine = Vec::with_capacity(n);
            let mut prep: Vec<Vec<Duration>> = vec![Vec::new(); bodies_len];
            let mut t: Vec<Times> = vec![vec![Vec::new(); CALLS]; bodies_len];
            for _ in 0..n {
                super::before_run(kind, threads);
                let started = Instant::now();
                runner
                    .run(vec![input.clone()])
                    .map_err(anyhow::Error::msg)?;
                engine.push(started.elapsed());
                if let Some((sig, model)) = &preprocessing {
                    for (b, times) in bodies.iter().zip(prep.iter_mut()) {
                        if let Some(image) = &b.image {
                            times.push(image.preprocess(sig, model)?);
                        }
                    }
                }
                for (b, per) in bodies.iter().zip(t.iter_mut()) {
                    for (which, times) in per.iter_mut().enumerate() {
                        if let Some(d) = call(b, which)? {
                            times.push(d);
                        }
                    }
                }
            }
            Ok((engine, prep, t))
        }
    })
    .await??;
    let engine = p50(&engine_times);
    let mut out = String::new();
    for ((label, per), prep) in labels.iter().zip(&times).zip(&prep_times) {
        // The work any protocol must do: the run, and the image signature's preprocessing.
        let (prep_cell, base) = if prep.is_empty() {
            ("-".to_string(), engine)
        } else {
            let p = p50(prep);
            (format!("{:.2} ms", ms(p)), engine + p)
        };
        let cell = |times: &[Duration]| {
            if times.is_empty() {
                return "n/a (JPEG bytes are not JSON text)".to_string();
            }
            let d = p50(times);
            let over = 100.0 * (d.as_secs_f64() - base.as_secs_f64()) / base.as_secs_f64();
            format!("{:.2} ms ({over:+.1} %)", ms(d))
        };
        out.push_str(&format!(
            "| {name} | {kind} | {label} | {:.2} ms | {prep_cell} | {} | {} | {} | {} | {} |\n",
            ms(engine),
            cell(&per[0]),
            cell(&per[1]),
            cell(&per[2]),
            cell(&per[3]),
            cell(&per[4]),
        ));
    }
    Ok(out)
}

/// The table's heading and header.
pub fn header(n: usize) -> String {
    format!(
        "\n### Protocol overhead, batch 1\n\n\
         One in-process server answering every protocol (one inference worker), the model's \
         engine run on its own (a second session of the same file on the bench's thread), an \
         image signature's preprocessing on its own (decode, resize, crop, normalize), then \
         every request, interleaved, {n} rounds; each cell is the served p50 and, in brackets, \
         its overhead over the engine run's p50 plus the preprocessing's: what is left is the \
         protocol's cost. TF REST: \
         `{{\"instances\"}}` JSON (`{{\"b64\"}}` for the JPEG); TF gRPC: `tensor_content` (the JPEG as \
         a DT_STRING tensor); V2 binary: the binary tensor extension with binary outputs (what \
         tritonclient.http sends); V2 JSON: `data` as a flat JSON array; V2 gRPC: \
         `raw_input_contents` answered with `raw_output_contents` (what tritonclient.grpc sends). \
         REST over HTTP/1.1 keep-alive; gRPC over one HTTP/2 connection (tonic).\n\n\
         | model | engine | body | engine run p50 | image preprocessing p50 | TF REST JSON | TF gRPC | V2 REST binary | V2 REST JSON | V2 gRPC |\n\
         |---|---|---|---|---|---|---|---|---|---|\n"
    )
}
