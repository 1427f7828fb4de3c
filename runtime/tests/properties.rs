//! Property tests (proptest): every decoder of client input answers an error, never a panic,
//! whatever the bytes; the REST and gRPC encoders round-trip through their decoders, NaN and
//! infinities included. Each failure proptest finds is shrunk to a small case to keep as a
//! regression test.

use std::path::Path;

use proptest::prelude::*;
use prost::Message;
use runtime::grpc::tensor::{decode, encode, Value};
use runtime::proto::tensorflow::TensorProto;
use runtime::rest::encode::outputs_json;
use runtime::rest::request::{parse_predict_request, JsonInput, Scalar};
use runtime::signature::{DType, Dim, ServingSignature, Signature, TensorSpec};
use runtime::tensor::{Tensor, TensorData};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Bytes that look like requests often enough to reach deep into the parser.
fn json_ish() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b"{".to_vec()),
            Just(b"}".to_vec()),
            Just(b"[".to_vec()),
            Just(b"]".to_vec()),
            Just(b",".to_vec()),
            Just(b":".to_vec()),
            Just(b"\"instances\"".to_vec()),
            Just(b"\"inputs\"".to_vec()),
            Just(b"\"b64\"".to_vec()),
            Just(b"\"signature_name\"".to_vec()),
            Just(b"NaN".to_vec()),
            Just(b"-Infinity".to_vec()),
            Just(b"1e400".to_vec()),
            Just(b"-0.5".to_vec()),
            Just(b"18446744073709551616".to_vec()),
            Just(b"true".to_vec()),
            Just(b"null".to_vec()),
            Just(b"\"\\u00e9\\\"".to_vec()),
            prop::collection::vec(any::<u8>(), 0..4),
        ],
        0..64,
    )
    .prop_map(|parts| parts.concat())
}

fn float_spec(name: &str) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dtype: DType::F32,
        shape: vec![Dim::Dynamic("batch".into()), Dim::Fixed(3)],
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_rest_parser_never_panics(body in json_ish()) {
        let _ = parse_predict_request(&body);
    }

    #[test]
    fn the_rest_parser_never_panics_on_any_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_predict_request(&body);
    }

    #[test]
    fn rest_outputs_round_trip_through_the_parser(
        values in prop::collection::vec(prop_oneof![
            any::<f32>(),
            Just(f32::NAN),
            Just(f32::INFINITY),
            Just(f32::NEG_INFINITY),
            Just(f32::MIN_POSITIVE),
        ], 1..8usize).prop_map(|mut v| { v.truncate(v.len() / 3 * 3); v })
    ) {
        prop_assume!(!values.is_empty());
        let rows = values.len() / 3;
        let sig = Signature { inputs: vec![], outputs: vec![float_spec("y")] };
        let tensor = Tensor::from_vec(vec![rows, 3], values.clone()).unwrap();
        let json = outputs_json(&sig, &[tensor]).unwrap();
        // {"outputs": [[...]]} read back as a request's "inputs".
        let text = String::from_utf8(json).unwrap().replacen("\"outputs\"", "\"inputs\"", 1);
        let request = parse_predict_request(text.as_bytes()).unwrap();
        let Some(JsonInput::Tensor(array)) = request.inputs else { panic!("{text}") };
        prop_assert_eq!(array.shape, vec![rows, 3]);
        for (got, want) in array.data.iter().zip(&values) {
            let Scalar::F(got) = *got else { panic!("{got:?} in {text}") };
            // Written as the shortest f32 text, read as f64: the same f32.
            prop_assert!(
                (got as f32).to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{} became {} in {}", want, got, text
            );
        }
    }

    #[test]
    fn the_tensor_proto_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(proto) = TensorProto::decode(bytes.as_slice()) {
            let _ = decode(proto, 1 << 20);
        }
    }

    #[test]
    fn tensor_protos_round_trip(
        values in prop::collection::vec(any::<f64>(), 0..16),
        raw in any::<bool>(),
    ) {
        let n = values.len();
        let tensor = Tensor::from_vec(vec![n], values.clone()).unwrap();
        let proto = encode(&tensor, raw);
        let Ok(Value::Tensor(back)) = decode(proto, 1 << 20) else { panic!("no tensor") };
        let TensorData::F64(got) = back.data() else { panic!("not float64") };
        prop_assert_eq!(back.shape(), &[n][..]);
        for (g, w) in got.iter().zip(&values) {
            prop_assert!(g.to_bits() == w.to_bits());
        }
    }

    #[test]
    fn the_model_config_parser_never_panics(text in "[ -~\n]{0,200}") {
        let _ = runtime::models::config::parse(&text);
        let wrapped = format!("model_config_list {{ config {{ {text} }} }}");
        let _ = runtime::models::config::parse(&wrapped);
    }

    #[test]
    fn the_signature_file_parser_never_panics(text in "[ -~\n]{0,200}") {
        let model = Signature {
            inputs: vec![TensorSpec {
                name: "images".into(),
                dtype: DType::F32,
                shape: vec![
                    Dim::Dynamic("batch".into()),
                    Dim::Fixed(3),
                    Dim::Fixed(224),
                    Dim::Fixed(224),
                ],
            }],
            outputs: vec![float_spec("logits")],
        };
        let file = Path::new("signature.toml");
        let _ = ServingSignature::parse(&text, file, &model);
        let _ = ServingSignature::parse(&format!("[input]\n{text}"), file, &model);
    }
}
