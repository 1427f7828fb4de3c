//! The body of a `:predict` request, parsed straight into flat buffers.
//!
//! A 1×224×224×3 image is 150 528 numbers: parsing them into `serde_json::Value` would allocate a
//! node per number. Here nested arrays stream into one `Vec<Scalar>` plus a shape, and raggedness
//! is caught while parsing.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// `{"signature_name"?, "instances": [...]}` (row format) or `{"inputs": ...}` (columnar).
#[derive(Debug, Deserialize)]
pub struct PredictRequest {
    #[serde(default)]
    pub signature_name: Option<String>,
    #[serde(default)]
    pub instances: Option<Vec<JsonInput>>,
    #[serde(default)]
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

/// One value of a request: a tensor, a binary `{"b64": "..."}`, or tensors keyed by input name.
#[derive(Clone, Debug, PartialEq)]
pub enum JsonInput {
    Tensor(NdArray),
    B64(String),
    Named(Vec<(String, JsonInput)>),
}

impl<'de> Deserialize<'de> for JsonInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(InputVisitor)
    }
}

struct InputVisitor;

impl<'de> Visitor<'de> for InputVisitor {
    type Value = JsonInput;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, a boolean, a nested array of them, {\"b64\": \"...\"} or an object keyed by input name")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<JsonInput, E> {
        Ok(scalar(Scalar::B(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<JsonInput, E> {
        Ok(scalar(Scalar::I(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<JsonInput, E> {
        Ok(scalar(Scalar::U(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<JsonInput, E> {
        Ok(scalar(Scalar::F(v)))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<JsonInput, E> {
        Err(E::custom(
            "strings are not tensor values; send binary data as {\"b64\": \"...\"}",
        ))
    }
    fn visit_unit<E: de::Error>(self) -> Result<JsonInput, E> {
        Err(E::custom("null is not a tensor value"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<JsonInput, A::Error> {
        let mut builder = NdBuilder::default();
        builder.read_seq(seq, 0)?;
        Ok(JsonInput::Tensor(builder.finish()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonInput, A::Error> {
        let mut named = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "b64" {
                let value: String = map.next_value()?;
                if named.is_empty() && map.next_key::<de::IgnoredAny>()?.is_none() {
                    return Ok(JsonInput::B64(value));
                }
                return Err(de::Error::custom(
                    "an object with a \"b64\" key must have no other key",
                ));
            }
            if named.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("input '{key}' is given twice")));
            }
            let value: JsonInput = map.next_value()?;
            named.push((key, value));
        }
        Ok(JsonInput::Named(named))
    }
}

fn scalar(s: Scalar) -> JsonInput {
    JsonInput::Tensor(NdArray {
        shape: Vec::new(),
        data: vec![s],
    })
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
    fn read_seq<'de, A: SeqAccess<'de>>(
        &mut self,
        mut seq: A,
        depth: usize,
    ) -> Result<(), A::Error> {
        if let Some(hint) = seq.size_hint() {
            self.data.reserve(hint);
        }
        let mut len = 0;
        while seq
            .next_element_seed(Element {
                builder: self,
                depth: depth + 1,
            })?
            .is_some()
        {
            len += 1;
        }
        self.close(depth, len).map_err(de::Error::custom)
    }

    fn push(&mut self, depth: usize, s: Scalar) -> Result<(), String> {
        match self.rank {
            None => self.rank = Some(depth),
            Some(rank) if rank != depth => return Err(ragged_depth()),
            Some(_) => {}
        }
        self.data.push(s);
        Ok(())
    }

    fn close(&mut self, depth: usize, len: usize) -> Result<(), String> {
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

struct Element<'a> {
    builder: &'a mut NdBuilder,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Element<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Element<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, a boolean or an array")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.builder
            .push(self.depth, Scalar::B(v))
            .map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.builder
            .push(self.depth, Scalar::I(v))
            .map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.builder
            .push(self.depth, Scalar::U(v))
            .map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.builder
            .push(self.depth, Scalar::F(v))
            .map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(
            "strings are not tensor values; send binary data as {\"b64\": \"...\"}",
        ))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom("null is not a tensor value"))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(
            "objects cannot appear inside a tensor's nested arrays",
        ))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.builder.read_seq(seq, self.depth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<JsonInput, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
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
        assert_eq!(t.data[3], Scalar::U(4));
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
        assert!(parse("[{\"a\": 1}]")
            .unwrap_err()
            .contains("objects cannot appear"));
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
        let r: PredictRequest = serde_json::from_str(r#"{"instances": [[1, 2], [3, 4]]}"#).unwrap();
        assert_eq!(r.instances.unwrap().len(), 2);
        let r: PredictRequest = serde_json::from_str(
            r#"{"signature_name": "serving_default", "inputs": {"x": [[1]]}}"#,
        )
        .unwrap();
        assert!(r.inputs.is_some() && r.instances.is_none());
    }
}
