//! gRPC vs REST at batch 1, on one in-process server answering both, beside the engine's own
//! run: the cat JPEG (REST `{"b64"}`, gRPC a DT_STRING tensor) and a 1x224x224x3 float tensor
//! of 0-1 pixels (REST nested JSON `instances`, gRPC `tensor_content`). Each round runs the
//! engine, then the four requests, so machine noise hits all alike.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use runtime::engine::EngineKind;
use runtime::grpc::tensor::known_shape;
use runtime::grpc::GrpcOptions;
use runtime::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use runtime::proto::tensorflow::serving::{ModelSpec, PredictRequest};
use runtime::proto::tensorflow::{DataType, TensorProto, TensorShapeProto};
use runtime::{AppState, Limits, Servable};

use super::{
    engine_and_served, mean, ms, nhwc_body, p50, random_input, request_body, serve_rest, Client,
};

/// Table rows for the model in `dir` on engine `kind`: an image model (signature.toml) gets the
/// cat JPEG and 0-1 pixels, any other model its input as a float tensor.
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
    let (rest_port, channel) = serve_both(name, served).await?;
    let mut client = PredictionServiceClient::new(channel);

    // (label, REST body, gRPC request) per row.
    let bodies: Vec<(String, Vec<u8>, PredictRequest)> = if image_model {
        let jpeg =
            std::fs::read(dir.with_file_name("cat.jpg")).context("cat.jpg (make bench-models)")?;
        let rest_pixels = nhwc_body();
        let pixels = float_tensor(&json_numbers(&rest_pixels)?, &[1, 224, 224, 3]);
        vec![
            (
                "cat JPEG".into(),
                request_body(dir, true, &input)?,
                request(name, "image_bytes", bytes_tensor(jpeg)),
            ),
            (
                "1x224x224x3 float pixels".into(),
                rest_pixels,
                request(name, "image_bytes", pixels),
            ),
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
        vec![(
            format!("{label} float tensor"),
            request_body(dir, false, &input)?,
            request(name, &input_name, float_tensor(values, &dims)),
        )]
    };
    let labels: Vec<String> = bodies.iter().map(|b| b.0.clone()).collect();
    let path = format!("/v1/models/{name}:predict");
    let mut runner = direct.backend.runner().map_err(anyhow::Error::msg)?;
    let handle = tokio::runtime::Handle::current();

    let times = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<Duration>>> {
        let mut http = Client::connect(rest_port)?;
        let mut grpc_call = |request: &PredictRequest| -> Result<Duration> {
            let started = Instant::now();
            let answer = handle
                .block_on(client.predict(request.clone()))
                .map_err(|s| anyhow::anyhow!("gRPC Predict: {s:?}"))?
                .into_inner();
            let took = started.elapsed();
            if answer.outputs.is_empty() {
                bail!("a gRPC answer without outputs");
            }
            Ok(took)
        };
        let mut rest_call = |body: &[u8]| -> Result<Duration> {
            let started = Instant::now();
            let answer = http.post(&path, body)?;
            let took = started.elapsed();
            if !answer.starts_with(b"{\"predictions\"") {
                bail!(
                    "unexpected REST answer: {}",
                    String::from_utf8_lossy(&answer[..answer.len().min(200)])
                );
            }
            Ok(took)
        };
        // Warm the connections and the worker.
        for (_, rest, grpc) in &bodies {
            rest_call(rest)?;
            grpc_call(grpc)?;
        }
        // The engine's run, then REST and gRPC for each body.
        let mut t: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); 1 + 2 * bodies.len()];
        for _ in 0..n {
            super::before_run(kind, threads);
            let started = Instant::now();
            runner
                .run(vec![input.clone()])
                .map_err(anyhow::Error::msg)?;
            t[0].push(started.elapsed());
            for (i, (_, rest, grpc)) in bodies.iter().enumerate() {
                t[1 + 2 * i].push(rest_call(rest)?);
                t[2 + 2 * i].push(grpc_call(grpc)?);
            }
        }
        Ok(t)
    })
    .await??;
    let engine = p50(&times[0]);
    let row = |body: &str, rest: &[Duration], grpc: &[Duration]| {
        let (r, g) = (p50(rest), p50(grpc));
        let over =
            |d: Duration| 100.0 * (d.as_secs_f64() - engine.as_secs_f64()) / engine.as_secs_f64();
        format!(
            "| {name} | {kind} | {body} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2}x | {:.1} % | {:.1} % | {:.2} / {:.2} ms |\n",
            ms(engine),
            ms(r),
            ms(g),
            g.as_secs_f64() / r.as_secs_f64(),
            over(r),
            over(g),
            ms(mean(rest)),
            ms(mean(grpc)),
        )
    };
    Ok(labels
        .iter()
        .enumerate()
        .map(|(i, label)| row(label, &times[1 + 2 * i], &times[2 + 2 * i]))
        .collect())
}

/// Serves `served` as `name` on one in-process state over REST and gRPC (one inference worker):
/// the REST port and a connected gRPC channel.
pub(super) async fn serve_both(
    name: &str,
    mut served: runtime::ServedModel,
) -> Result<(u16, tonic::transport::Channel)> {
    served.name = name.into();
    let state = AppState::serving(
        name,
        served.version,
        Servable::Available(Arc::new(served)),
        Limits::default(),
    );
    let rest_port = serve_rest(state.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(runtime::grpc::serve(
        listener,
        state,
        GrpcOptions::default(),
        std::future::pending(),
    ));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .context("cannot connect to the in-process gRPC server")?;
    Ok((rest_port, channel))
}

/// The table's heading and header.
pub fn header(n: usize) -> String {
    format!(
        "\n### gRPC vs REST, batch 1\n\n\
         One in-process server answering both protocols (one inference worker), the model's \
         engine run on its own, then every request, interleaved, {n} rounds. EfficientNet-Lite0 \
         (image signature): the cat photo (REST `{{\"b64\"}}` JSON; gRPC the JPEG as a DT_STRING \
         tensor) and 0-1 pixels as a 1x224x224x3 float tensor (REST nested JSON `instances`; gRPC \
         `tensor_content`), both through the image signature (decode, resize, normalize). \
         ResNet-50: its 1x3x224x224 input as nested JSON vs `tensor_content`, straight to the \
         engine. Overhead = served p50 over the engine run's p50. gRPC client: tonic, one HTTP/2 \
         connection; REST: HTTP/1.1 keep-alive.\n\n\
         | model | engine | body | engine run p50 | REST p50 | gRPC p50 | gRPC / REST | REST overhead | gRPC overhead | mean REST / gRPC |\n\
         |---|---|---|---|---|---|---|---|---|---|\n"
    )
}

fn shape(dims: &[i64]) -> Option<TensorShapeProto> {
    Some(known_shape(dims.iter().copied()))
}

pub(super) fn bytes_tensor(file: Vec<u8>) -> TensorProto {
    TensorProto {
        dtype: DataType::DtString as i32,
        tensor_shape: shape(&[1]),
        string_val: vec![file],
        ..Default::default()
    }
}

/// Every number of a REST `instances` body, in order (the same pixels for gRPC).
pub(super) fn json_numbers(body: &[u8]) -> Result<Vec<f32>> {
    fn walk(v: &serde_json::Value, out: &mut Vec<f32>) {
        match v {
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            serde_json::Value::Number(n) => out.push(n.as_f64().unwrap_or_default() as f32),
            _ => {}
        }
    }
    let json: serde_json::Value = serde_json::from_slice(body)?;
    let mut values = Vec::new();
    walk(&json["instances"], &mut values);
    Ok(values)
}

/// `values` as a DT_FLOAT tensor_content of shape `dims`.
pub(super) fn float_tensor(values: &[f32], dims: &[i64]) -> TensorProto {
    TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: shape(dims),
        tensor_content: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub(super) fn request(name: &str, input: &str, tensor: TensorProto) -> PredictRequest {
    PredictRequest {
        model_spec: Some(ModelSpec {
            name: name.into(),
            ..Default::default()
        }),
        inputs: [(input.to_string(), tensor)].into(),
        output_filter: vec![],
    }
}
