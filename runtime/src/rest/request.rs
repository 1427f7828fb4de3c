//! The body of a `:predict` request, parsed by hand straight into flat buffers.
//!
//! A 1x224x224x3 image is 150 528 numbers. serde_json spends ~50 ns on each (8 ms for the body,
//! measured in `make bench`), more than the 5 % of a ResNet-50 run we allow for serving. This
//! parser reads the request's few shapes of JSON directly: nested arrays stream into one
//! `Vec<Scalar>` plus a shape (raggedness caught while parsing); the number syntax is checked
//! here, integers are kept exact, and decimals go to fast-float2 (Eisel-Lemire, correctly
//! rounded). Strings with escapes are handed to serde_json.

use std::fmt;

mod nd;
use nd::NdBuilder;

/// Arrays nested deeper than this are refused (stack safety; no tensor has 64 dimensions).
const MAX_DEPTH: usize = 64;

/// `{"signature_name"?, "instances": [...]}` (row format) or `{"inputs": ...}` (columnar).
#[derive(Debug, Default)]
pub struct PredictRequest {
    pub signature_name: Option<String>,
    pub instances: Option<Vec<JsonInput>>,
    pub inputs: Option<JsonInput>,
}

/// A JSON number or boolean, kept as parsed until the target dtype is known.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    F(f64),
    I(i64),
    U(u64),
    B(bool),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::F(v) if v.is_infinite() => {
                f.write_str(if *v > 0.0 { "Infinity" } else { "-Infinity" })
            }
            Scalar::F(v) if v.is_finite() && *v != 0.0 && !(1e-4..1e16).contains(&v.abs()) => {
                write!(f, "{v:e}")
            }
            Scalar::F(v) => write!(f, "{v}"),
            Scalar::I(v) => write!(f, "{v}"),
            Scalar::U(v) => write!(f, "{v}"),
            Scalar::B(v) => write!(f, "{v}"),
        }
    }
}

/// A rectangular nested array (or a lone scalar, of shape `[]`), flattened row-major.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NdArray {
    pub shape: Vec<usize>,
    pub data: Vec<Scalar>,
}

/// One value of a request: a tensor, a binary `{"b64": "..."}`, a list of binary values (the
/// columnar form of a batch of them, `[{"b64": ...}, ...]`), or tensors keyed by input name.
#[derive(Clone, Debug, PartialEq)]
pub enum JsonInput {
    Tensor(NdArray),
    B64(String),
    B64List(Vec<String>),
    Named(Vec<(String, JsonInput)>),
}

/// Parses a predict request body. Errors read like serde_json's: what, then where.
pub fn parse_predict_request(body: &[u8]) -> Result<PredictRequest, String> {
    let mut p = Parser { s: body, pos: 0 };
    let request = p.request().map_err(|e| p.locate(e))?;
    p.ws();
    if p.pos < p.s.len() {
        return Err(p.locate("trailing characters after the JSON object".into()));
    }
    Ok(request)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

type PResult<T> = Result<T, String>;

impl Parser<'_> {
    fn locate(&self, what: String) -> String {
        let upto = &self.s[..self.pos.min(self.s.len())];
        let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = upto.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
        format!("{what} at line {line} column {column}")
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8) -> PResult<()> {
        match self.peek() {
            Some(b) if b == c => {
                self.pos += 1;
                Ok(())
            }
            Some(b) => Err(format!("expected '{}', found '{}'", c as char, b as char)),
            None => Err(format!("EOF while expecting '{}'", c as char)),
        }
    }

    fn request(&mut self) -> PResult<PredictRequest> {
        if self.peek() != Some(b'{') {
            return Err("the request must be a JSON object such as {\"instances\": [...]}".into());
        }
        let mut request = PredictRequest::default();
        let mut seen: Vec<String> = Vec::new();
        self.object(|p, key| {
            if seen.contains(&key) {
                return Err(format!("duplicate key '{key}'"));
            }
            match key.as_str() {
                "signature_name" => {
                    request.signature_name = match p.peek() {
                        Some(b'"') => Some(p.string()?),
                        Some(b'n') => {
                            p.literal("null")?;
                            None
                        }
                        _ => return Err("'signature_name' must be a string".into()),
                    }
                }
                "instances" => {
                    if p.peek() != Some(b'[') {
                        return Err("'instances' must be a list with one entry per example".into());
                    }
                    let mut instances = Vec::new();
                    p.array(|p| {
                        instances.push(p.input(1)?);
                        Ok(())
                    })?;
                    request.instances = Some(instances);
                }
                "inputs" => request.inputs = Some(p.input(0)?),
                _ => p.skip_value(0)?,
            }
            seen.push(key);
            Ok(())
        })?;
        Ok(request)
    }

    /// `{ "key": value, ... }`; `each` is called with the key, positioned on the value.
    fn object(&mut self, mut each: impl FnMut(&mut Self, String) -> PResult<()>) -> PResult<()> {
        self.expect(b'{')?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err("expected a quoted key".into());
            }
            let key = self.string()?;
            self.expect(b':')?;
            each(self, key)?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b) => return Err(format!("expected ',' or '}}', found '{}'", b as char)),
                None => return Err("EOF while parsing an object".into()),
            }
        }
    }

    /// `[ value, ... ]`; `each` is called positioned on each element. Returns the length.
    fn array(&mut self, mut each: impl FnMut(&mut Self) -> PResult<()>) -> PResult<usize> {
        self.expect(b'[')?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(0);
        }
        let mut len = 0;
        loop {
            each(self)?;
            len += 1;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(len);
                }
                Some(b) => return Err(format!("expected ',' or ']', found '{}'", b as char)),
                None => return Err("EOF while parsing a list".into()),
            }
        }
    }

    /// A request value: tensor (nested arrays or scalar), `{"b64": ...}`, or named tensors.
    fn input(&mut self, depth: usize) -> PResult<JsonInput> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        match self.peek() {
            Some(b'[') if self.list_of_objects() => {
                let mut list = Vec::new();
                self.array(|p| match p.input(depth + 1)? {
                    JsonInput::B64(data) => {
                        list.push(data);
                        Ok(())
                    }
                    _ => Err("a list of objects holds binary values, {\"b64\": \"...\"}, one per batch entry".into()),
                })?;
                Ok(JsonInput::B64List(list))
            }
            Some(b'[') => {
                let mut builder = NdBuilder::default();
                builder.read_array(self, 0)?;
                Ok(JsonInput::Tensor(builder.finish()))
            }
            Some(b'{') => self.named(depth),
            _ => Ok(JsonInput::Tensor(NdArray {
                shape: Vec::new(),
                data: vec![self.scalar()?],
            })),
        }
    }

    /// Positioned on `[`: whether the first element is an object (`[{"b64": ...}, ...]`).
    fn list_of_objects(&self) -> bool {
        self.s[self.pos + 1..]
            .iter()
            .find(|c| !c.is_ascii_whitespace())
            == Some(&b'{')
    }

    fn named(&mut self, depth: usize) -> PResult<JsonInput> {
        let mut named: Vec<(String, JsonInput)> = Vec::new();
        let mut b64 = None;
        self.object(|p, key| {
            if key == "b64" {
                if p.peek() != Some(b'"') {
                    return Err("\"b64\" must be a base64 string".into());
                }
                b64 = Some(p.string()?);
            } else {
                if named.iter().any(|(k, _)| *k == key) {
                    return Err(format!("input '{key}' is given twice"));
                }
                let value = p.input(depth + 1)?;
                named.push((key, value));
            }
            if b64.is_some() && !named.is_empty() {
                return Err("an object with a \"b64\" key must have no other key".into());
            }
            Ok(())
        })?;
        Ok(match b64 {
            Some(data) => JsonInput::B64(data),
            None => JsonInput::Named(named),
        })
    }

    fn scalar(&mut self) -> PResult<Scalar> {
        match self.peek() {
            Some(b't') => self.literal("true").map(|_| Scalar::B(true)),
            Some(b'f') => self.literal("false").map(|_| Scalar::B(false)),
            Some(b'n') => {
                self.literal("null")?;
                Err("null is not a tensor value".into())
            }
            Some(b'"') => {
                Err("strings are not tensor values; send binary data as {\"b64\": \"...\"}".into())
            }
            Some(b'{') => Err("objects cannot appear inside a tensor's nested arrays".into()),
            // TF Serving's (and Python's json) non-finite numbers; `nan`, `inf` stay errors.
            Some(b'N') => self.literal("NaN").map(|_| Scalar::F(f64::NAN)),
            Some(b'I') => self.literal("Infinity").map(|_| Scalar::F(f64::INFINITY)),
            Some(b'-') if self.s[self.pos..].starts_with(b"-I") => self
                .literal("-Infinity")
                .map(|_| Scalar::F(f64::NEG_INFINITY)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b) => Err(format!("expected a value, found '{}'", b as char)),
            None => Err("EOF while parsing a value".into()),
        }
    }

    fn literal(&mut self, word: &str) -> PResult<()> {
        if self.s[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err("expected a value".into())
        }
    }

    /// A JSON number: integers stay exact (i64/u64), decimals become f64 (correctly rounded).
    /// fast-float2 finds the end of the number and converts it in one pass; what it accepts
    /// beyond JSON (`+1`, `.5`, `01`, `1.`, `inf`) is refused here.
    fn number(&mut self) -> PResult<Scalar> {
        let rest = &self.s[self.pos..];
        let Ok((value, len)) = fast_float2::parse_partial::<f64, _>(rest) else {
            return Err("invalid number".into());
        };
        let text = &rest[..len];
        let unsigned = text.strip_prefix(b"-").unwrap_or(text);
        // fast-float stops at a second '.' or at a '.' after the exponent, so only the first
        // '.', 'e' or 'E' needs a look (and the scan stops there: "0.12345678359270096").
        let marker = unsigned
            .iter()
            .position(|c| matches!(c, b'.' | b'e' | b'E'));
        let is_float = marker.is_some();
        let valid = unsigned.first().is_some_and(u8::is_ascii_digit)
            && !(unsigned[0] == b'0' && unsigned.get(1).is_some_and(u8::is_ascii_digit))
            // A digit must follow '.' ("1." and "1.e5" are not JSON).
            && marker.is_none_or(|k| {
                unsigned[k] != b'.' || unsigned.get(k + 1).is_some_and(u8::is_ascii_digit)
            });
        if !valid || matches!(rest.get(len), Some(b'e' | b'E' | b'.')) {
            self.pos += len;
            return Err(format!(
                "invalid number {}",
                String::from_utf8_lossy(&rest[..(len + 1).min(rest.len())])
            ));
        }
        self.pos += len;
        if !is_float {
            // Integers stay exact: fast-float's f64 cannot hold every int64.
            let digits = std::str::from_utf8(text).map_err(|_| "invalid number".to_string())?;
            if let Ok(v) = digits.parse::<i64>() {
                return Ok(Scalar::I(v));
            }
            if let Ok(v) = digits.parse::<u64>() {
                return Ok(Scalar::U(v));
            }
        }
        if value.is_finite() {
            Ok(Scalar::F(value))
        } else {
            Err(format!(
                "number {} is out of range",
                String::from_utf8_lossy(text)
            ))
        }
    }

    fn string(&mut self) -> PResult<String> {
        self.expect(b'"')?;
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.s.get(self.pos) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.pos += 2;
                }
                Some(c) if *c < 0x20 => return Err("control character inside a string".into()),
                Some(_) => self.pos += 1,
                None => return Err("EOF while parsing a string".into()),
            }
        }
        let raw = &self.s[start..self.pos];
        self.pos += 1;
        if escaped {
            serde_json::from_slice::<String>(&self.s[start - 1..self.pos])
                .map_err(|e| format!("invalid string: {e}"))
        } else {
            String::from_utf8(raw.to_vec()).map_err(|_| "invalid UTF-8 in a string".into())
        }
    }

    /// Skips any JSON value (unknown keys are ignored, as TF Serving does).
    fn skip_value(&mut self, depth: usize) -> PResult<()> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        match self.peek() {
            Some(b'{') => self.object(|p, _| p.skip_value(depth + 1)),
            Some(b'[') => self.array(|p| p.skip_value(depth + 1)).map(|_| ()),
            Some(b'"') => self.string().map(|_| ()),
            Some(b'n') => self.literal("null"),
            _ => self.scalar().map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests;
