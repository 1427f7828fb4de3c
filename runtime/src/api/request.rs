//! The body of a `:predict` request, parsed by hand straight into flat buffers.
//!
//! A 1x224x224x3 image is 150 528 numbers. serde_json spends ~50 ns on each (8 ms for the body,
//! measured in `make bench`), more than the 5 % of a ResNet-50 run we allow for serving. This
//! parser reads the request's few shapes of JSON directly: nested arrays stream into one
//! `Vec<Scalar>` plus a shape (raggedness caught while parsing); the number syntax is checked
//! here, integers are kept exact, and decimals go to fast-float2 (Eisel-Lemire, correctly
//! rounded). Strings with escapes are handed to serde_json.

use std::fmt;

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

/// Accumulates a nested array: values in order, and the length seen at each depth.
#[derive(Default)]
struct NdBuilder {
    data: Vec<Scalar>,
    /// Length of the arrays at each depth, once one has been closed there.
    dims: Vec<Option<usize>>,
    /// Depth at which scalars sit, once known: the rank.
    rank: Option<usize>,
}

impl NdBuilder {
    fn read_array(&mut self, p: &mut Parser<'_>, depth: usize) -> PResult<()> {
        if depth >= MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let len = p.array(|p| {
            if p.peek() == Some(b'[') {
                self.read_array(p, depth + 1)
            } else {
                let s = p.scalar()?;
                self.push(depth + 1, s)
            }
        })?;
        self.close(depth, len)
    }

    fn push(&mut self, depth: usize, s: Scalar) -> PResult<()> {
        match self.rank {
            None => self.rank = Some(depth),
            Some(rank) if rank != depth => return Err(ragged_depth()),
            Some(_) => {}
        }
        self.data.push(s);
        Ok(())
    }

    fn close(&mut self, depth: usize, len: usize) -> PResult<()> {
        match self.rank {
            // An empty innermost array, e.g. `[[], []]`.
            None if len == 0 => self.rank = Some(depth + 1),
            Some(rank) if depth >= rank => return Err(ragged_depth()),
            _ => {}
        }
        if self.dims.len() <= depth {
            self.dims.resize(depth + 1, None);
        }
        match self.dims[depth] {
            None => self.dims[depth] = Some(len),
            Some(seen) if seen != len => {
                return Err(format!(
                    "ragged nested array: an array at depth {depth} has {len} elements where an earlier one has {seen}; tensors must be rectangular"
                ))
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn finish(self) -> NdArray {
        NdArray {
            shape: self.dims.into_iter().map(|d| d.unwrap_or(0)).collect(),
            data: self.data,
        }
    }
}

fn ragged_depth() -> String {
    "ragged nested array: numbers and arrays are mixed at the same depth; tensors must be rectangular".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `s` as the columnar `inputs` value.
    fn parse(s: &str) -> Result<JsonInput, String> {
        parse_predict_request(format!("{{\"inputs\": {s}}}").as_bytes()).map(|r| r.inputs.unwrap())
    }

    fn tensor(s: &str) -> NdArray {
        match parse(s).unwrap() {
            JsonInput::Tensor(t) => t,
            other => panic!("not a tensor: {other:?}"),
        }
    }

    #[test]
    fn nested_arrays_flatten_row_major() {
        let t = tensor("[[1, 2.5, -3], [4, 5, 6]]");
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(t.data[1], Scalar::F(2.5));
        assert_eq!(t.data[2], Scalar::I(-3));
        assert_eq!(t.data[3], Scalar::I(4));
        assert_eq!(tensor("7").shape, Vec::<usize>::new());
        assert_eq!(
            tensor("[[true], [false]]").data,
            vec![Scalar::B(true), Scalar::B(false)]
        );
        assert_eq!(tensor("[[], []]").shape, vec![2, 0]);
        assert_eq!(tensor("[]").shape, vec![0]);
    }

    #[test]
    fn ragged_arrays_are_refused() {
        for bad in [
            "[[1, 2], [3]]",
            "[[1, 2], 3]",
            "[1, [2, 3]]",
            "[[[1]], [[2, 3]]]",
            "[[1], []]",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("ragged"), "{bad}: {err}");
        }
    }

    #[test]
    fn strings_nulls_and_objects_inside_tensors_are_refused() {
        assert!(parse("[\"a\"]").unwrap_err().contains("b64"));
        assert!(parse("[null]").unwrap_err().contains("null"));
        assert!(parse("[1, {\"a\": 1}]")
            .unwrap_err()
            .contains("objects cannot appear"));
        // A list that starts with an object is a list of binary values, and only that.
        assert!(parse("[{\"a\": 1}]")
            .unwrap_err()
            .contains("one per batch entry"));
        assert_eq!(
            parse(r#"[{"b64": "aGk="}, {"b64": "aA"}]"#).unwrap(),
            JsonInput::B64List(vec!["aGk=".into(), "aA".into()])
        );
    }

    #[test]
    fn named_inputs_and_b64() {
        match parse(r#"{"a": [1, 2], "b": {"b64": "aGk="}}"#).unwrap() {
            JsonInput::Named(v) => {
                assert_eq!(v[0].0, "a");
                assert_eq!(v[1], ("b".to_string(), JsonInput::B64("aGk=".into())));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(r#"{"b64": "x", "y": 1}"#)
            .unwrap_err()
            .contains("no other key"));
        assert!(parse(r#"{"a": 1, "a": 2}"#)
            .unwrap_err()
            .contains("given twice"));
    }

    #[test]
    fn request_formats() {
        let r = parse_predict_request(
            br#"{"instances": [[1, 2], [3, 4]], "ignored": {"a": [null, "x"]}}"#,
        )
        .unwrap();
        assert_eq!(r.instances.unwrap().len(), 2);
        let r = parse_predict_request(
            br#" {"signature_name": "serving_default", "inputs": {"x": [[1]]}} "#,
        )
        .unwrap();
        assert_eq!(r.signature_name.as_deref(), Some("serving_default"));
        assert!(r.inputs.is_some() && r.instances.is_none());
        let r = parse_predict_request(
            br#"{"signature_name": "caf\u00e9", "instances": [{"b64": "a\/b"}]}"#,
        )
        .unwrap();
        assert_eq!(r.signature_name.as_deref(), Some("café"));
        assert_eq!(r.instances.unwrap()[0], JsonInput::B64("a/b".into()));
    }

    #[test]
    fn malformed_bodies_say_what_and_where() {
        for (body, needle) in [
            ("", "must be a JSON object"),
            ("[1]", "must be a JSON object"),
            (
                r#"{"instances": [1, 2"#,
                "EOF while parsing a list at line 1 column 20",
            ),
            (
                "{\"instances\":\n [1,, 2]}",
                "expected a value, found ',' at line 2 column 5",
            ),
            (r#"{"instances": [1]} x"#, "trailing characters"),
            (r#"{"instances": 5}"#, "'instances' must be a list"),
            (r#"{"instances": [01]}"#, "invalid number"),
            (r#"{"instances": [1.]}"#, "invalid number 1."),
            (r#"{"instances": [1e]}"#, "invalid number 1e"),
            (r#"{"instances": [.5]}"#, "expected a value, found '.'"),
            (r#"{"instances": [+1]}"#, "expected a value, found '+'"),
            (r#"{"instances": [-inf]}"#, "invalid number"),
            (r#"{"instances": [1.e5]}"#, "invalid number"),
            (r#"{"instances": [-]}"#, "invalid number"),
            (r#"{"instances": [1e400]}"#, "number 1e400 is out of range"),
            (r#"{"instances": [tru]}"#, "expected a value"),
            (
                r#"{"instances": [1], "instances": [2]}"#,
                "duplicate key 'instances'",
            ),
            (
                r#"{"signature_name": 3, "instances": [1]}"#,
                "'signature_name' must be a string",
            ),
            (
                "{\"instances\": [\"a\tb\"]}",
                "strings are not tensor values",
            ),
        ] {
            let err = parse_predict_request(body.as_bytes()).unwrap_err();
            assert!(err.contains(needle), "{body:?}: {err}");
        }
        let bomb = format!(
            "{{\"instances\": {}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(parse_predict_request(bomb.as_bytes())
            .unwrap_err()
            .contains("nested deeper than 64"));
        let bomb = format!(
            "{{\"inputs\": {}1{}}}",
            "{\"a\":".repeat(100_000),
            "}".repeat(100_000)
        );
        assert!(parse_predict_request(bomb.as_bytes())
            .unwrap_err()
            .contains("nested deeper than 64"));
    }

    fn number(text: &str) -> Scalar {
        match parse(text).unwrap() {
            JsonInput::Tensor(t) => t.data[0],
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn integers_stay_exact() {
        assert_eq!(number("0"), Scalar::I(0));
        assert_eq!(number("-0"), Scalar::I(0));
        assert_eq!(number("9007199254740993"), Scalar::I(9_007_199_254_740_993));
        assert_eq!(number("-9223372036854775808"), Scalar::I(i64::MIN));
        assert_eq!(number("9223372036854775807"), Scalar::I(i64::MAX));
        assert_eq!(number("9223372036854775808"), Scalar::U(1 << 63));
        assert_eq!(number("18446744073709551615"), Scalar::U(u64::MAX));
        assert_eq!(
            number("18446744073709551616"),
            Scalar::F(18446744073709551616.0)
        );
        assert_eq!(
            number("-9223372036854775809"),
            Scalar::F(-9223372036854775809.0)
        );
    }

    #[test]
    fn decimals_round_exactly_like_std() {
        let mut cases: Vec<String> = [
            "0.1",
            "-0.0",
            "1e0",
            "1E5",
            "1e-5",
            "2.5e+3",
            "0.000123456789",
            "123456789012345678901234567890",
            "1.7976931348623157e308",
            "2.2250738585072014e-308",
            "5e-324",
            "9007199254740993.0",
            "0.30000000000000004",
            "1234567890123456789.5",
            "3.141592653589793238462643383279",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Shortest round-trip renderings of many f32 and f64 values, as clients produce them.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = f64::from_bits(x);
            if f.is_finite() {
                cases.push(format!("{f:e}"));
                cases.push(format!("{}", (x >> 11) as f64 / (1u64 << 53) as f64));
                cases.push(format!("{}", (x >> 40) as f32 / (1u64 << 24) as f32));
                cases.push(format!(
                    "{}",
                    f32::from_bits((x >> 32) as u32 & 0x7f7f_ffff)
                ));
            }
        }
        for text in cases {
            let want: f64 = text.parse().unwrap();
            match number(&text) {
                Scalar::F(got) => assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{text}: got {got}, want {want}"
                ),
                Scalar::I(got) => assert_eq!(got as f64, want, "{text}"),
                Scalar::U(got) => assert_eq!(got as f64, want, "{text}"),
                Scalar::B(_) => unreachable!(),
            }
        }
    }
}
