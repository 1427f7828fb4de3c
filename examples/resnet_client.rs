//! The article's resnet client in Rust: send a JPEG/PNG photo N times and print
//! `Prediction class: N, avg latency: X ms`. REST by default: `{"b64": ...}` posted over plain
//! HTTP/1.1 (`std::net`; the API needs nothing more than a POST with a JSON body). With `--grpc
//! HOST:PORT`: PredictionService.Predict with the file as a DT_STRING tensor, through the tonic
//! client generated from proto/.
//!
//! ```text
//! cargo run -p onnx-serving-examples --bin resnet_client -- --image /tmp/models/cat.jpg
//! cargo run -p onnx-serving-examples --bin resnet_client -- --grpc localhost:8500
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    about = "Post a photo to an onnx-serving (or TF Serving) image classifier and print its class"
)]
struct Args {
    /// Predict URL (http only)
    #[arg(long, default_value = "http://localhost:8501/v1/models/resnet:predict")]
    server: String,
    /// JPEG or PNG photo, sent as {"b64": ...}
    #[arg(long, default_value = "/tmp/models/cat.jpg")]
    image: std::path::PathBuf,
    /// Requests to time (after one warm-up request)
    #[arg(short = 'n', long, default_value_t = 10)]
    num_requests: u32,
    /// Use the gRPC API at this address (e.g. localhost:8500) instead of REST
    #[arg(long, value_name = "HOST:PORT")]
    grpc: Option<String>,
    /// Model name (with --grpc; REST takes it from the URL)
    #[arg(long, default_value = "resnet")]
    model: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(addr) = &args.grpc {
        let photo = std::fs::read(&args.image)
            .with_context(|| format!("cannot read the photo {}", args.image.display()))?;
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(grpc::classify(addr, &args.model, photo, args.num_requests));
    }
    let url = Url::parse(&args.server)?;
    let photo = std::fs::read(&args.image)
        .with_context(|| format!("cannot read the photo {}", args.image.display()))?;
    let body =
        json!({"instances": [{"b64": base64::engine::general_purpose::STANDARD.encode(photo)}]})
            .to_string();

    let mut total = Duration::ZERO;
    let mut prediction = Value::Null;
    for i in 0..=args.num_requests {
        let started = Instant::now();
        let response = post(&url, &body)?;
        if i > 0 {
            total += started.elapsed();
        }
        prediction = response["predictions"][0].clone();
    }
    let class = predicted_class(&prediction)?;
    println!(
        "Prediction class: {class}, avg latency: {:.1} ms",
        total.as_secs_f64() * 1000.0 / f64::from(args.num_requests.max(1))
    );
    Ok(())
}

/// `classes` when the signature returns several outputs, else the argmax of the bare vector.
fn predicted_class(prediction: &Value) -> Result<i64> {
    if let Some(obj) = prediction.as_object() {
        return obj
            .get("classes")
            .and_then(Value::as_i64)
            .ok_or_else(|| anyhow!("the prediction has no integer 'classes': {prediction}"));
    }
    let mut scores = Vec::new();
    flatten(prediction, &mut scores);
    scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as i64)
        .ok_or_else(|| anyhow!("the prediction is not a vector of scores: {prediction}"))
}

fn flatten(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        Value::Number(n) => out.extend(n.as_f64()),
        _ => {}
    }
}

struct Url {
    host: String,
    port: u16,
    path: String,
}

impl Url {
    fn parse(url: &str) -> Result<Url> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("{url}: only http:// URLs are supported"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().with_context(|| format!("bad port in {url}"))?),
            None => (authority, 80),
        };
        Ok(Url {
            host: host.to_owned(),
            port,
            path: if path.is_empty() {
                "/".into()
            } else {
                path.to_owned()
            },
        })
    }
}

fn post(url: &Url, body: &str) -> Result<Value> {
    let mut stream = TcpStream::connect((url.host.as_str(), url.port)).with_context(|| {
        format!(
            "cannot connect to {}:{} (is the server running?)",
            url.host, url.port
        )
    })?;
    write!(
        stream,
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        url.path,
        url.host,
        url.port,
        body.len()
    )?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .context("reading the response")?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut payload = raw[split + 4..].to_vec();
    if head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        payload = dechunk(&payload)?;
    }
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("malformed status line: {head}"))?;
    if status != 200 {
        bail!(
            "{status} from the server: {}",
            String::from_utf8_lossy(&payload)
        );
    }
    serde_json::from_slice(&payload).context("the response is not JSON")
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunked body"))?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunked body");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// `--grpc`: PredictionService.Predict, the photo as a DT_STRING tensor of shape [1].
mod grpc {
    use std::time::{Duration, Instant};

    use anyhow::{anyhow, Context, Result};
    use runtime::grpc::tensor::known_shape;
    use runtime::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
    use runtime::proto::tensorflow::serving::{ModelSpec, PredictRequest};
    use runtime::proto::tensorflow::{DataType, TensorProto};

    pub async fn classify(addr: &str, model: &str, photo: Vec<u8>, n: u32) -> Result<()> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .with_context(|| format!("{addr} is not a HOST:PORT address"))?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {addr} (is the server running?)"))?;
        let mut client = PredictionServiceClient::new(channel);
        let image = TensorProto {
            dtype: DataType::DtString as i32,
            tensor_shape: Some(known_shape([1])),
            string_val: vec![photo],
            ..Default::default()
        };
        let request = PredictRequest {
            model_spec: Some(ModelSpec {
                name: model.into(),
                ..Default::default()
            }),
            inputs: [("image_bytes".to_string(), image)].into(),
            output_filter: vec!["classes".into()],
        };
        let mut total = Duration::ZERO;
        let mut class = None;
        for i in 0..=n {
            let started = Instant::now();
            let response = client
                .predict(request.clone())
                .await
                .map_err(|s| anyhow!("{:?} from {addr}: {}", s.code(), s.message()))?
                .into_inner();
            if i > 0 {
                total += started.elapsed();
            }
            let classes = &response
                .outputs
                .get("classes")
                .ok_or_else(|| anyhow!("no 'classes' output"))?;
            class = classes.int64_val.first().copied();
        }
        let class = class.ok_or_else(|| anyhow!("'classes' is empty"))?;
        println!(
            "Prediction class: {class}, avg latency: {:.1} ms",
            total.as_secs_f64() * 1000.0 / f64::from(n.max(1))
        );
        Ok(())
    }
}
