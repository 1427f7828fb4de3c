//! The REST request parser's unit tests.

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
    let r =
        parse_predict_request(br#"{"instances": [[1, 2], [3, 4]], "ignored": {"a": [null, "x"]}}"#)
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
