//! JSON as TF Serving writes it: serde_json, except that non-finite floats are the bare tokens
//! `NaN`, `Infinity` and `-Infinity` (which Python's `json` reads) instead of `null`.

use serde::{Serialize, Serializer};

use crate::error::ApiError;

thread_local! {
    /// The token [`TfFormatter`] writes for the non-finite float being serialized.
    static NON_FINITE: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// A float that serializes as TF Serving writes it: a number, or the bare tokens `NaN`,
/// `Infinity` and `-Infinity` (Python's json, which TF Serving's clients use, reads them).
/// serde_json writes non-finite floats as null through its formatter's `write_null`; the token
/// is handed to [`TfFormatter`] for that call.
pub struct Float<T>(pub T);

impl<T: Copy + Into<f64> + Serialize> Serialize for Float<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v: f64 = self.0.into();
        if !v.is_finite() {
            let token = if v.is_nan() {
                "NaN"
            } else if v > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            };
            NON_FINITE.with(|t| t.set(Some(token)));
        }
        self.0.serialize(s)
    }
}

/// serde_json's compact formatter, but a null that stands for a non-finite float is that
/// float's token (see [`Float`]).
struct TfFormatter;

impl serde_json::ser::Formatter for TfFormatter {
    fn write_null<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        match NON_FINITE.with(|t| t.take()) {
            Some(token) => writer.write_all(token.as_bytes()),
            None => writer.write_all(b"null"),
        }
    }
}

/// `value` as JSON bytes, non-finite [`Float`]s as their tokens.
pub fn write_json(value: &impl Serialize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, TfFormatter);
    let written = value.serialize(&mut ser);
    NON_FINITE.with(|t| t.set(None));
    written.map_err(|e| ApiError::Internal(format!("cannot write the response: {e}")))?;
    Ok(out)
}
