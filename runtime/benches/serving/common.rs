//! What every table shares: the in-process server, request bodies, a keep-alive HTTP client,
//! statistics, the machine's description and BENCHMARKS.md's sections.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use runtime::rest::decode::tensors_from_instances;
use runtime::rest::request::parse_predict_request;
use runtime::signature::{DType, Dim, Signature, TensorSpec};
use runtime::tensor::Tensor;
use runtime::{AppState, Limits, Servable, ServedModel};

/// Serves `served` as `name` on a free loopback port, in this process; returns the port.
pub(crate) async fn serve_in_process(name: &str, mut served: ServedModel) -> Result<u16> {
    served.name = name.into();
    serve_rest(AppState::serving(
        name,
        served.version,
        Servable::Available(Arc::new(served)),
        Limits::default(),
    ))
    .await
}

/// Serves `state`'s REST API on a free loopback port, in this process; returns the port.
pub(crate) async fn serve_rest(state: Arc<AppState>) -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, runtime::app(state)).await });
    Ok(port)
}

/// Deterministic pseudo-random values in [0, 1) of the first input's shape at batch 1.
pub(crate) fn random_input(sig: &Signature) -> Result<Tensor> {
    let spec = &sig.inputs[0];
    let shape: Vec<usize> = spec.shape.iter().map(|d| d.fixed().unwrap_or(1)).collect();
    let len: usize = shape.iter().product();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<f32> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    Ok(Tensor::from_vec(shape, data)?)
}

pub(crate) fn instances_body(input: &Tensor) -> Result<Vec<u8>> {
    let values = input
        .as_slice::<f32>()
        .context("the input is not float32")?;
    let nested = to_json(values, &input.shape()[1..]);
    Ok(serde_json::to_vec(
        &serde_json::json!({ "instances": [nested] }),
    )?)
}

/// The request a client sends: the photo beside the model folders as `{"b64": JPEG}` for a model
/// with an image signature (what the walk-through sends), else `input` as nested JSON.
pub(crate) fn request_body(model_dir: &Path, image: bool, input: &Tensor) -> Result<Vec<u8>> {
    if !image {
        return instances_body(input);
    }
    use base64::Engine as _;
    let photo = model_dir.with_file_name("cat.jpg");
    let jpeg = std::fs::read(&photo)
        .with_context(|| format!("cannot read {} (make bench-models)", photo.display()))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(jpeg);
    Ok(serde_json::to_vec(
        &serde_json::json!({ "instances": [{ "b64": b64 }] }),
    )?)
}

/// Row-major `values` of `shape` as nested JSON arrays.
pub(crate) fn to_json(values: &[f32], shape: &[usize]) -> serde_json::Value {
    let Some((&n, inner)) = shape.split_first() else {
        return serde_json::json!(values.first().copied().unwrap_or_default());
    };
    let per: usize = inner.iter().product();
    serde_json::Value::Array(
        (0..n)
            .map(|i| to_json(&values[i * per..(i + 1) * per], inner))
            .collect(),
    )
}

pub(crate) fn nhwc_body() -> Vec<u8> {
    let spec = TensorSpec {
        name: "x".into(),
        dtype: DType::F32,
        shape: vec![
            Dim::Fixed(1),
            Dim::Fixed(224),
            Dim::Fixed(224),
            Dim::Fixed(3),
        ],
    };
    let sig = Signature {
        inputs: vec![spec],
        outputs: vec![],
    };
    random_input(&sig)
        .and_then(|t| instances_body(&t))
        .unwrap_or_default()
}

pub(crate) fn decode_time(n: usize) -> Result<(Duration, Duration)> {
    let body = nhwc_body();
    let sig = Signature {
        inputs: vec![TensorSpec {
            name: "x".into(),
            dtype: DType::F32,
            shape: vec![
                Dim::Dynamic("batch".into()),
                Dim::Fixed(224),
                Dim::Fixed(224),
                Dim::Fixed(3),
            ],
        }],
        outputs: vec![],
    };
    let (mut parse, mut full) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let request = parse_predict_request(&body).map_err(anyhow::Error::msg)?;
        parse.push(t.elapsed());
        let t = Instant::now();
        let request2 = parse_predict_request(&body).map_err(anyhow::Error::msg)?;
        let tensors =
            tensors_from_instances(&sig, request2.instances.as_deref().unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        full.push(t.elapsed());
        assert_eq!(tensors[0].shape(), &[1, 224, 224, 3]);
        drop(request);
    }
    Ok((p50(&parse), p50(&full)))
}

/// A keep-alive HTTP/1.1 client: enough for Content-Length answers from our own server.
pub(crate) struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub(crate) fn connect(port: u16) -> Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    pub(crate) fn post(&mut self, path: &str, body: &[u8]) -> Result<Vec<u8>> {
        self.post_with(path, body, &[])
    }

    /// As `post`, with extra request headers.
    pub(crate) fn post_with(
        &mut self,
        path: &str,
        body: &[u8],
        headers: &[(&str, String)],
    ) -> Result<Vec<u8>> {
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        write!(self.writer, "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n", body.len())?;
        self.writer.write_all(body)?;
        let mut length = None;
        let mut line = String::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = Some(v.trim().parse::<usize>()?);
                }
            }
        }
        let mut answer = vec![0; length.context("answer without Content-Length")?];
        self.reader.read_exact(&mut answer)?;
        Ok(answer)
    }
}

pub(crate) fn p50(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

pub(crate) fn mean(times: &[Duration]) -> Duration {
    times.iter().sum::<Duration>() / times.len() as u32
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = sysinfo::System::new().map_or(0, |mut sys| {
        sys.refresh_memory();
        sys.total_memory()
    });
    format!(
        "{cpu}, {} logical / {} physical cores, {:.0} GiB RAM",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        sysinfo::System::physical_core_count().unwrap_or(0),
        memory as f64 / (1u64 << 30) as f64
    )
}

/// Replaces the text between the `markers` in `path` (or appends it as a `heading` section).
pub(crate) fn write_section(
    path: &Path,
    report: &str,
    markers: (&str, &str),
    heading: &str,
) -> Result<()> {
    let (start, end) = markers;
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let section = format!("{start}\n{report}{end}");
    let new = match (old.find(start), old.find(end)) {
        (Some(a), Some(b)) if b > a => format!("{}{section}{}", &old[..a], &old[b + end.len()..]),
        _ => format!("{}\n## {heading}\n\n{section}\n", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))
}
