//! `runtime healthcheck`: a dependency-free HTTP probe, since the serving image has no shell or curl.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::HealthcheckArgs;

pub fn healthcheck(args: &HealthcheckArgs) -> Result<()> {
    let url = args.url.clone().unwrap_or_else(|| {
        format!(
            "http://127.0.0.1:{}/v1/models/{}",
            args.rest_api_port, args.model_name
        )
    });
    let timeout = Duration::from_secs(args.timeout.max(1));
    let (status, body) = http_get(&url, timeout)?;
    if status != 200 {
        bail!("{url} answered HTTP {status}: {}", body.trim());
    }
    let json: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("{url} did not answer JSON: {}", body.trim()))?;
    match crate::rest::state_of(&json) {
        Some("AVAILABLE") => {
            println!("AVAILABLE");
            Ok(())
        }
        Some(state) => bail!("model state is {state}, not AVAILABLE: {}", body.trim()),
        None => bail!("{url} did not answer a model status: {}", body.trim()),
    }
}

/// A plain HTTP/1.0 GET (no chunked encoding to decode); returns status code and body.
fn http_get(url: &str, timeout: Duration) -> Result<(u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("{url}: bad host:port '{authority}'"))?
        .next()
        .with_context(|| format!("{url}: '{authority}' resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("no server answers at {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("{url}: no complete answer"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{url}: malformed HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{url}: malformed HTTP status line"))?;
    Ok((status, body.to_string()))
}
