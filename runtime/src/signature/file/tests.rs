//! `signature.toml` parsing and validation: defaults, the public signature, and every mistake
//! explained.

use super::*;
use crate::signature::image::Layout;
use crate::signature::{DType, Dim, TensorSpec};
use crate::tensor::Tensor;

fn model() -> Signature {
    let b = || Dim::Dynamic("batch".into());
    Signature {
        inputs: vec![TensorSpec {
            name: "images".into(),
            dtype: DType::F32,
            shape: vec![b(), Dim::Fixed(3), Dim::Fixed(4), Dim::Fixed(6)],
        }],
        outputs: vec![TensorSpec {
            name: "logits".into(),
            dtype: DType::F32,
            shape: vec![b(), Dim::Fixed(4)],
        }],
    }
}

fn parse(text: &str) -> Result<ServingSignature, String> {
    ServingSignature::parse(text, Path::new("/nonexistent/signature.toml"), &model())
        .map_err(|e| e.to_string())
}

#[test]
fn labels_name_a_file_of_the_version_folder() {
    for name in ["/dev/zero", "../labels.txt", "a/../../b", ""] {
        let err = parse(&format!(
            "[input]\nkind = \"image\"\n[output]\nlabels = \"{name}\"\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("name a file in the model's version folder"),
            "{name}: {err}"
        );
    }
    // Inside the folder: refused only because this one does not exist.
    let err =
        parse("[input]\nkind = \"image\"\n[output]\nlabels = \"meta/labels.txt\"\n").unwrap_err();
    assert!(
        err.contains("cannot read /nonexistent/meta/labels.txt"),
        "{err}"
    );
}

#[test]
fn defaults_come_from_the_model() {
    let s = parse("[input]\nkind = \"image\"\n").unwrap();
    assert_eq!(s.input.layout, Layout::Nchw);
    assert_eq!((s.input.height, s.input.width), (4, 6));
    assert_eq!(s.input.name, "image_bytes");
    assert_eq!(s.input.mean, [0.0; 3]);
    assert!(s.output.is_none());
    assert_eq!(s.public.inputs[0].dtype, DType::String);
    assert_eq!(s.public.outputs, model().outputs);
}

#[test]
fn outputs_become_the_public_signature() {
    let s = parse(
        "[input]\nkind = \"image\"\n[output]\nactivation = \"softmax\"\nlabel_offset = 1\ntop_k = 2\nemit = [\"classes\", \"top_k_probabilities\"]\n",
    )
    .unwrap();
    let names: Vec<_> = s.public.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["classes", "top_k_probabilities"]);
    assert_eq!(s.public.outputs[1].shape_string(), "[-1, 2]");
    let out = s.output.unwrap();
    let raw =
        Tensor::from_vec(vec![2, 4], vec![0.0f32, 3.0, 1.0, 0.0, 5.0, 0.0, 0.0, 6.0]).unwrap();
    let got = out.postprocess(&raw).unwrap();
    assert_eq!(got[0].as_slice::<i64>().unwrap(), [2, 4]);
    let p = got[1].as_slice::<f32>().unwrap();
    assert_eq!(got[1].shape(), &[2, 2]);
    // softmax([0, 3, 1, 0]) = [0.0403, 0.8098, 0.1096, 0.0403]; top 2 of row 0.
    assert!(
        (p[0] - 0.8098).abs() < 1e-3 && (p[1] - 0.1096).abs() < 1e-3,
        "{p:?}"
    );
}

#[test]
fn mistakes_are_explained() {
    let cases = [
        ("[input]\nkind = \"audio\"\n", "only kind is \"image\""),
        (
            "[input]\nkind = \"image\"\nsize = [224, 224]\n",
            "size = [224, 224] but model input 'images'",
        ),
        (
            "[input]\nkind = \"image\"\nlayout = \"NHWC\"\n",
            "3 colour channels",
        ),
        ("[input]\nkind = \"image\"\nstd = [1, 0, 1]\n", "non-zero"),
        ("[input]\nkind = \"image\"\nmean = [1, 2]\n", "3 numbers"),
        (
            "[input]\nkind = \"image\"\nfilter = \"cubic\"\n",
            "nearest, bilinear",
        ),
        (
            "[input]\nkind = \"image\"\nmodel_input = \"x\"\n",
            "'x' is not in the model",
        ),
        (
            "[input]\nkind = \"image\"\ncolour = 1\n",
            "unknown field `colour`",
        ),
        (
            "[input]\nkind = \"image\"\n[output]\nemit = [\"clases\"]\n",
            "unknown output 'clases'",
        ),
        (
            "[input]\nkind = \"image\"\n[output]\nemit = [\"top_k_labels\"]\n",
            "needs labels",
        ),
        (
            "[input]\nkind = \"image\"\n[output]\ntop_k = 9\n",
            "between 1 and 4",
        ),
        (
            "[input]\nkind = \"image\"\n[output]\nlabels = \"none.txt\"\n",
            "cannot read",
        ),
        ("[input\n", "signature.toml"),
    ];
    for (text, want) in cases {
        let err = parse(text).unwrap_err();
        assert!(err.contains(want), "{text:?}: {err}");
        assert!(err.contains("/nonexistent/signature.toml"), "{err}");
    }
}

/// `[batch, classes, 1, 1]` (Caffe2's exports) is read as `[batch, classes]`; any other extra
/// dimension, or a free one, is refused at load, and an output of another shape at run time.
#[test]
fn class_outputs_may_carry_trailing_ones_only() {
    let with_output = |shape: Vec<Dim>| {
        let mut m = model();
        m.outputs[0].shape = shape;
        ServingSignature::parse(
            "[input]\nkind = \"image\"\n[output]\ntop_k = 1\n",
            Path::new("/nonexistent/signature.toml"),
            &m,
        )
        .map_err(|e| e.to_string())
    };
    let b = || Dim::Dynamic("batch".into());
    let s = with_output(vec![b(), Dim::Fixed(4), Dim::Fixed(1), Dim::Fixed(1)]).unwrap();
    let out = s.output.unwrap();
    let raw = Tensor::from_vec(vec![1, 4, 1, 1], vec![0.1f32, 0.2, 0.6, 0.1]).unwrap();
    let got = out.postprocess(&raw).unwrap();
    assert_eq!(got[0].as_slice::<i64>().unwrap(), [2]);
    assert_eq!(got[1].shape(), &[1, 4]);
    let wrong = Tensor::from_vec(vec![1, 2, 2, 1], vec![0.1f32, 0.2, 0.6, 0.1]).unwrap();
    let err = out.postprocess(&wrong).unwrap_err();
    assert!(err.contains("[batch, 4]"), "{err}");

    for shape in [
        vec![b(), Dim::Fixed(4), Dim::Fixed(2)],
        vec![b(), Dim::Fixed(4), Dim::Dynamic("h".into())],
        vec![b()],
    ] {
        let err = with_output(shape).map(|_| ()).unwrap_err();
        assert!(
            err.contains("needs float32 [batch, classes] (trailing dimensions of 1 allowed)"),
            "{err}"
        );
    }
}
