//! An input's JSON `data` (nested or flat, row-major) read straight into a typed buffer, with
//! serde, once its datatype is known: memory is the tensor's, not a `serde_json::Value` per
//! number (32 bytes for a 2-byte `0,`), and reading stops at the first value past the shape.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Deeper than any tensor rank: a hostile body, not a tensor.
const MAX_DEPTH: usize = 64;

/// The values of `data` as `T`, at most `limit` of them (the shape's element count); the error
/// says which value did not fit (serde's words: "invalid value: integer `300`, expected i8").
pub fn flat<T: DeserializeOwned>(data: &RawValue, limit: usize) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_str(data.get());
    Flat {
        out: &mut out,
        depth: 0,
        limit,
    }
    .deserialize(&mut de)
    .map_err(|e| e.to_string())?;
    Ok(out)
}

struct Flat<'v, T> {
    out: &'v mut Vec<T>,
    depth: usize,
    limit: usize,
}

impl<T: DeserializeOwned> Flat<'_, T> {
    fn push<E: de::Error>(self, value: Result<T, E>) -> Result<(), E> {
        if self.out.len() == self.limit {
            return Err(E::custom(format!(
                "'data' holds more values than the shape's {}",
                self.limit
            )));
        }
        self.out.push(value?);
        Ok(())
    }
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Flat<'_, T> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Flat<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a value or a (nested) array of values")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom(format!(
                "'data' is nested more than {MAX_DEPTH} deep"
            )));
        }
        while seq
            .next_element_seed(Flat {
                out: &mut *self.out,
                depth: self.depth + 1,
                limit: self.limit,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(T::deserialize(IntoDeserializer::<E>::into_deserializer(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(T::deserialize(IntoDeserializer::<E>::into_deserializer(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(T::deserialize(IntoDeserializer::<E>::into_deserializer(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(T::deserialize(IntoDeserializer::<E>::into_deserializer(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(T::deserialize(IntoDeserializer::<E>::into_deserializer(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_string()).unwrap()
    }

    #[test]
    fn nested_or_flat_into_the_type() {
        assert_eq!(
            flat::<i32>(&raw("[[1, 2], [3, 4]]"), 4).unwrap(),
            [1, 2, 3, 4]
        );
        assert_eq!(flat::<f32>(&raw("[1, 2.5]"), 2).unwrap(), [1.0, 2.5]);
        assert_eq!(
            flat::<String>(&raw(r#"["a", "b"]"#), 2).unwrap(),
            ["a", "b"]
        );
        assert_eq!(flat::<bool>(&raw("true"), 1).unwrap(), [true]);
    }

    #[test]
    fn values_that_do_not_fit_are_refused() {
        assert!(flat::<i8>(&raw("[1, 300]"), 2).unwrap_err().contains("300"));
        assert!(flat::<i64>(&raw("[1.5]"), 1).is_err());
        assert!(flat::<bool>(&raw("[1]"), 1).is_err());
        assert!(flat::<f32>(&raw("[null]"), 1).is_err());
        assert!(flat::<f32>(&raw("[1, 2, 3]"), 2)
            .unwrap_err()
            .contains("more values"));
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(flat::<f32>(&raw(&deep), 1).unwrap_err().contains("nested"));
    }
}
