//! A model's public serving signature, from an optional `signature.toml` beside `model.onnx`.
//!
//! ONNX image classifiers take normalized float tensors and return logits; TF Serving's ResNet
//! took JPEG bytes and returned `classes` and `probabilities`. The signature file bridges the two:
//!
//! ```toml
//! [input]
//! name = "image_bytes"      # public input name (default image_bytes)
//! model_input = "images"    # ONNX input it feeds (default: the only input)
//! kind = "image"
//! layout = "NCHW"           # or NHWC (default: from the model's shape)
//! size = [224, 224]         # height, width (default: the model's fixed dimensions)
//! resize = "shorter_side"   # or "stretch"
//! filter = "bilinear"       # nearest | bilinear | bicubic | lanczos3
//! mean = [0.485, 0.456, 0.406]   # (x - mean) / std, x in 0-1
//! std = [0.229, 0.224, 0.225]
//!
//! [output]
//! model_output = "logits"   # ONNX output, [batch, classes] (default: the only output)
//! activation = "softmax"    # or "none" when the model already emits probabilities
//! label_offset = 0          # added to class ids (1 for TF's 1001-class numbering)
//! labels = "labels.txt"     # one label per line, a file beside this one (no path out of the folder)
//! top_k = 5
//! emit = ["classes", "probabilities"]
//! ```
//!
//! Clients then send an image as `{"b64": "<JPEG or PNG>"}` or as an HWC tensor of 0-1 floats at
//! any size (what today's `resnet_client.py` sends); both go through the same resize, crop and
//! normalization.

use std::collections::HashSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageBuffer, ImageDecoder, ImageFormat, ImageReader, Pixel, Rgb};
use serde::Deserialize;

use super::signature::{DType, Dim, Signature, TensorSpec};
use super::ModelError;
use crate::tensor::Tensor;

/// The file looked for beside `model.onnx`.
pub const SIGNATURE_FILE: &str = "signature.toml";
/// Images larger than this (width x height) are refused before decoding: memory stays bounded.
pub const MAX_IMAGE_PIXELS: u64 = 40_000_000;
/// Neither side may exceed this.
pub const MAX_IMAGE_SIDE: u32 = 16_384;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    input: InputFile,
    output: Option<OutputFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputFile {
    name: Option<String>,
    model_input: Option<String>,
    kind: String,
    layout: Option<String>,
    size: Option<[usize; 2]>,
    resize: Option<String>,
    filter: Option<String>,
    mean: Option<Vec<f32>>,
    std: Option<Vec<f32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputFile {
    model_output: Option<String>,
    activation: Option<String>,
    label_offset: Option<i64>,
    labels: Option<String>,
    top_k: Option<usize>,
    emit: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// Scale so the target fits inside, then crop the centre.
    ShorterSide,
    /// Scale each axis to the target, ignoring the aspect ratio.
    Stretch,
}

/// How an image becomes the model's input tensor.
#[derive(Clone, Debug)]
pub struct ImageInput {
    pub name: String,
    pub model_input: usize,
    pub layout: Layout,
    pub height: usize,
    pub width: usize,
    pub resize: Resize,
    pub filter: FilterType,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// What the response carries, computed from the model's `[batch, classes]` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    Classes,
    Probabilities,
    Labels,
    TopKClasses,
    TopKProbabilities,
    TopKLabels,
}

impl Emit {
    const ALL: [(&'static str, Emit); 6] = [
        ("classes", Emit::Classes),
        ("probabilities", Emit::Probabilities),
        ("labels", Emit::Labels),
        ("top_k_classes", Emit::TopKClasses),
        ("top_k_probabilities", Emit::TopKProbabilities),
        ("top_k_labels", Emit::TopKLabels),
    ];

    fn name(self) -> &'static str {
        Emit::ALL
            .iter()
            .find(|(_, e)| *e == self)
            .map_or("", |(n, _)| n)
    }
}

#[derive(Clone, Debug)]
pub struct ClassOutput {
    pub model_output: usize,
    pub classes: usize,
    pub softmax: bool,
    pub label_offset: i64,
    pub labels: Option<Vec<String>>,
    pub top_k: usize,
    pub emit: Vec<Emit>,
}

/// A parsed and validated `signature.toml`.
#[derive(Clone, Debug)]
pub struct ServingSignature {
    pub file: PathBuf,
    pub input: ImageInput,
    pub output: Option<ClassOutput>,
    /// What clients see: the metadata endpoint reports this, responses follow its outputs.
    pub public: Signature,
}

impl ServingSignature {
    /// Reads the `signature.toml` beside the ONNX file `model_path`, if there is one, checked
    /// against the model's signature.
    pub fn load(
        model_path: &Path,
        model: &Signature,
    ) -> Result<Option<ServingSignature>, ModelError> {
        let file = model_path.with_file_name(SIGNATURE_FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ModelError::Io { path: file, source }),
        };
        Self::parse(&text, &file, model).map(Some)
    }

    pub fn parse(
        text: &str,
        file: &Path,
        model: &Signature,
    ) -> Result<ServingSignature, ModelError> {
        let bad = |message: String| ModelError::Signature {
            path: file.to_owned(),
            message,
        };
        let spec: FileSpec = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let input = image_input(spec.input, model).map_err(&bad)?;
        let output = match spec.output {
            Some(out) => Some(class_output(out, model, file).map_err(&bad)?),
            None => None,
        };
        let public = public_signature(&input, output.as_ref(), model);
        Ok(ServingSignature {
            file: file.to_owned(),
            input,
            output,
            public,
        })
    }
}

fn find(specs: &[TensorSpec], name: Option<&str>, kind: &str) -> Result<usize, String> {
    match name {
        Some(n) => specs.iter().position(|s| s.name == n).ok_or_else(|| {
            format!(
                "{kind} '{n}' is not in the model; it has {}",
                specs
                    .iter()
                    .map(|s| format!("'{}'", s.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }),
        None if specs.len() == 1 => Ok(0),
        None => Err(format!(
            "the model has {} {kind}s: say which with model_{kind} = \"...\"",
            specs.len()
        )),
    }
}

fn image_input(f: InputFile, model: &Signature) -> Result<ImageInput, String> {
    if f.kind != "image" {
        return Err(format!(
            "[input] kind = \"{}\" is not supported; the only kind is \"image\"",
            f.kind
        ));
    }
    if model.inputs.len() != 1 {
        return Err(format!(
            "an image signature needs a model with one input; this one has {}",
            model.inputs.len()
        ));
    }
    let ix = find(&model.inputs, f.model_input.as_deref(), "input")?;
    let spec = &model.inputs[ix];
    if spec.dtype != DType::F32 {
        return Err(format!(
            "model input '{}' is {}; image inputs must feed a float32 tensor",
            spec.name, spec.dtype
        ));
    }
    if spec.shape.len() != 4 {
        return Err(format!(
            "model input '{}' has shape {}; an image input feeds a 4-D [batch, ...] tensor",
            spec.name,
            spec.shape_string()
        ));
    }
    let channels_at = |k: usize| spec.shape[k].fixed() == Some(3);
    let layout = match f.layout.as_deref() {
        Some("NCHW") => Layout::Nchw,
        Some("NHWC") => Layout::Nhwc,
        Some(other) => return Err(format!("layout = \"{other}\": use \"NCHW\" or \"NHWC\"")),
        None if channels_at(1) => Layout::Nchw,
        None if channels_at(3) => Layout::Nhwc,
        None => {
            return Err(format!(
                "cannot tell the layout of model input '{}' {}: set layout = \"NCHW\" or \"NHWC\"",
                spec.name,
                spec.shape_string()
            ))
        }
    };
    let (c, h, w) = match layout {
        Layout::Nchw => (1, 2, 3),
        Layout::Nhwc => (3, 1, 2),
    };
    if spec.shape[c].fixed().is_some_and(|n| n != 3) {
        return Err(format!(
            "model input '{}' {} does not have 3 colour channels where layout {} puts them",
            spec.name,
            spec.shape_string(),
            f.layout.as_deref().unwrap_or("(inferred)")
        ));
    }
    let model_hw = (spec.shape[h].fixed(), spec.shape[w].fixed());
    let (height, width) = match (f.size, model_hw) {
        (Some([sh, sw]), (mh, mw)) => {
            if mh.is_some_and(|m| m != sh) || mw.is_some_and(|m| m != sw) {
                return Err(format!(
                    "size = [{sh}, {sw}] but model input '{}' is {}",
                    spec.name,
                    spec.shape_string()
                ));
            }
            (sh, sw)
        }
        (None, (Some(mh), Some(mw))) => (mh, mw),
        (None, _) => {
            return Err(format!(
                "model input '{}' {} has free height or width: set size = [height, width]",
                spec.name,
                spec.shape_string()
            ))
        }
    };
    if height == 0 || width == 0 || height > 8192 || width > 8192 {
        return Err(format!(
            "size = [{height}, {width}] must be between 1 and 8192"
        ));
    }
    let resize = match f.resize.as_deref().unwrap_or("shorter_side") {
        "shorter_side" => Resize::ShorterSide,
        "stretch" => Resize::Stretch,
        other => {
            return Err(format!(
            "resize = \"{other}\": use \"shorter_side\" (scale, then centre-crop) or \"stretch\""
        ))
        }
    };
    let filter = match f.filter.as_deref().unwrap_or("bilinear") {
        "nearest" => FilterType::Nearest,
        "bilinear" => FilterType::Triangle,
        "bicubic" => FilterType::CatmullRom,
        "lanczos3" => FilterType::Lanczos3,
        other => {
            return Err(format!(
                "filter = \"{other}\": use nearest, bilinear, bicubic or lanczos3"
            ))
        }
    };
    let triple = |v: Option<Vec<f32>>, default: f32, what: &str| -> Result<[f32; 3], String> {
        match v {
            None => Ok([default; 3]),
            Some(v) => <[f32; 3]>::try_from(v.as_slice())
                .map_err(|_| format!("{what} must list 3 numbers (R, G, B), got {}", v.len())),
        }
    };
    let mean = triple(f.mean, 0.0, "mean")?;
    let std = triple(f.std, 1.0, "std")?;
    if std.iter().any(|s| !s.is_finite() || *s == 0.0) || mean.iter().any(|m| !m.is_finite()) {
        return Err("mean must be finite and std finite and non-zero".into());
    }
    Ok(ImageInput {
        name: f.name.unwrap_or_else(|| "image_bytes".into()),
        model_input: ix,
        layout,
        height,
        width,
        resize,
        filter,
        mean,
        std,
    })
}

fn class_output(f: OutputFile, model: &Signature, file: &Path) -> Result<ClassOutput, String> {
    let ix = find(&model.outputs, f.model_output.as_deref(), "output")?;
    let spec = &model.outputs[ix];
    if spec.dtype != DType::F32 || spec.shape.len() != 2 {
        return Err(format!(
            "model output '{}' is {} {}; class post-processing needs float32 [batch, classes]",
            spec.name,
            spec.dtype,
            spec.shape_string()
        ));
    }
    let classes = spec.shape[1].fixed().ok_or_else(|| {
        format!(
            "model output '{}' {} has a free class dimension",
            spec.name,
            spec.shape_string()
        )
    })?;
    let softmax = match f.activation.as_deref().unwrap_or("none") {
        "softmax" => true,
        "none" => false,
        other => {
            return Err(format!(
                "activation = \"{other}\": use \"softmax\" (the model emits logits) or \"none\" (it emits probabilities)"
            ))
        }
    };
    let label_offset = f.label_offset.unwrap_or(0);
    let labels = match &f.labels {
        None => None,
        Some(name) => {
            // A file of the version folder: not a path out of it (`/dev/zero`, `../..`).
            let inside = Path::new(name)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside || name.is_empty() {
                return Err(format!(
                    "labels = \"{name}\": name a file in the model's version folder, beside signature.toml (e.g. labels = \"labels.txt\")"
                ));
            }
            let path = file.parent().unwrap_or(Path::new(".")).join(name);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("labels = \"{name}\": cannot read {}: {e}", path.display()))?;
            let labels: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
            let labels = trim_trailing_empty(labels);
            if labels.len() != classes {
                return Err(format!(
                    "{} has {} labels but model output '{}' has {classes} classes; one label per line, line 1 = class 0",
                    path.display(),
                    labels.len(),
                    spec.name
                ));
            }
            Some(labels)
        }
    };
    let top_k = f.top_k.unwrap_or(classes.min(5));
    if top_k == 0 || top_k > classes {
        return Err(format!("top_k = {top_k} must be between 1 and {classes}"));
    }
    let names = f
        .emit
        .unwrap_or_else(|| vec!["classes".into(), "probabilities".into()]);
    if names.is_empty() {
        return Err("emit is empty: list at least one of classes, probabilities, labels, top_k_classes, top_k_probabilities, top_k_labels".into());
    }
    let mut seen = HashSet::new();
    let mut emit = Vec::with_capacity(names.len());
    for name in &names {
        let e = Emit::ALL
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| *e)
            .ok_or_else(|| {
                format!(
                    "emit: unknown output '{name}'; choose from classes, probabilities, labels, top_k_classes, top_k_probabilities, top_k_labels"
                )
            })?;
        if !seen.insert(name.as_str()) {
            return Err(format!("emit lists '{name}' twice"));
        }
        if matches!(e, Emit::Labels | Emit::TopKLabels) && labels.is_none() {
            return Err(format!("emit '{name}' needs labels = \"labels.txt\""));
        }
        emit.push(e);
    }
    Ok(ClassOutput {
        model_output: ix,
        classes,
        softmax,
        label_offset,
        labels,
        top_k,
        emit,
    })
}

fn trim_trailing_empty(mut v: Vec<String>) -> Vec<String> {
    while v.last().is_some_and(|l| l.is_empty()) {
        v.pop();
    }
    v
}

fn public_signature(
    input: &ImageInput,
    output: Option<&ClassOutput>,
    model: &Signature,
) -> Signature {
    let batch = || Dim::Dynamic("batch".into());
    let inputs = vec![TensorSpec {
        name: input.name.clone(),
        dtype: DType::String,
        shape: vec![batch()],
    }];
    let outputs = match output {
        None => model.outputs.clone(),
        Some(out) => out
            .emit
            .iter()
            .map(|e| {
                let (dtype, per_row) = match e {
                    Emit::Classes => (DType::I64, None),
                    Emit::Labels => (DType::String, None),
                    Emit::Probabilities => (DType::F32, Some(out.classes)),
                    Emit::TopKClasses => (DType::I64, Some(out.top_k)),
                    Emit::TopKProbabilities => (DType::F32, Some(out.top_k)),
                    Emit::TopKLabels => (DType::String, Some(out.top_k)),
                };
                let mut shape = vec![batch()];
                shape.extend(per_row.map(Dim::Fixed));
                TensorSpec {
                    name: e.name().into(),
                    dtype,
                    shape,
                }
            })
            .collect(),
    };
    Signature { inputs, outputs }
}

/// One image as 0-1 RGB floats, row-major HWC.
pub struct FloatImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<f32>,
}

/// What a client's image can be: encoded bytes or already-decoded 0-1 values.
pub enum ImageSource<'a> {
    Encoded(&'a [u8]),
    Pixels(FloatImage),
}

impl ImageInput {
    /// Decodes, resizes, crops and normalizes one image into `out` (one batch row, model layout).
    pub fn preprocess(&self, source: ImageSource<'_>, out: &mut Vec<f32>) -> Result<(), String> {
        match source {
            ImageSource::Encoded(bytes) => {
                let rgb = decode(bytes)?;
                let (w, h) = self.resized_size(rgb.width(), rgb.height());
                let resized = resize_rgb8(rgb, w, h, self.filter)?;
                self.write(&resized, |p: &Rgb<u8>, c| f32::from(p.0[c]) / 255.0, out);
            }
            ImageSource::Pixels(img) => {
                let buf: ImageBuffer<Rgb<f32>, Vec<f32>> =
                    ImageBuffer::from_raw(img.width, img.height, img.data)
                        .ok_or("image tensor size does not match its shape")?;
                let (w, h) = self.resized_size(img.width, img.height);
                let resized = image::imageops::resize(&buf, w, h, self.filter);
                self.write(&resized, |p: &Rgb<f32>, c| p.0[c], out);
            }
        }
        Ok(())
    }

    /// The size to resize to before the centre crop.
    fn resized_size(&self, w: u32, h: u32) -> (u32, u32) {
        let (tw, th) = (self.width as u32, self.height as u32);
        match self.resize {
            Resize::Stretch => (tw, th),
            Resize::ShorterSide => {
                let scale = f64::max(f64::from(tw) / f64::from(w), f64::from(th) / f64::from(h));
                let rw = (f64::from(w) * scale).round() as u32;
                let rh = (f64::from(h) * scale).round() as u32;
                (rw.max(tw), rh.max(th))
            }
        }
    }

    /// Centre crop, normalization and layout, appended to `out`.
    fn write<P: Pixel>(
        &self,
        img: &ImageBuffer<P, Vec<P::Subpixel>>,
        value: impl Fn(&P, usize) -> f32,
        out: &mut Vec<f32>,
    ) {
        let (w, h) = (self.width as u32, self.height as u32);
        let left = (img.width() - w) / 2;
        let top = (img.height() - h) / 2;
        let norm = |p: &P, c: usize| (value(p, c) - self.mean[c]) / self.std[c];
        match self.layout {
            Layout::Nhwc => {
                for y in 0..h {
                    for x in 0..w {
                        let p = img.get_pixel(left + x, top + y);
                        for c in 0..3 {
                            out.push(norm(p, c));
                        }
                    }
                }
            }
            Layout::Nchw => {
                for c in 0..3 {
                    for y in 0..h {
                        for x in 0..w {
                            out.push(norm(img.get_pixel(left + x, top + y), c));
                        }
                    }
                }
            }
        }
    }

    /// The model input's shape for `batch` images.
    pub fn model_shape(&self, batch: usize) -> [usize; 4] {
        match self.layout {
            Layout::Nchw => [batch, 3, self.height, self.width],
            Layout::Nhwc => [batch, self.height, self.width, 3],
        }
    }
}

/// Resizes 8-bit RGB with fast_image_resize: Pillow's fixed-point convolution (the same
/// antialiased filters), vectorized for the CPU at run time. image's own resize took ~5 % of a
/// served EfficientNet-Lite0 request (perf, BENCHMARKS.md); this is the path every b64 image takes.
fn resize_rgb8(
    src: image::RgbImage,
    w: u32,
    h: u32,
    filter: FilterType,
) -> Result<image::RgbImage, String> {
    use fast_image_resize as fir;
    if src.dimensions() == (w, h) {
        return Ok(src);
    }
    let (sw, sh) = src.dimensions();
    let fail = |e: &dyn std::fmt::Display| format!("cannot resize the image: {e}");
    // Typed views link only the RGB8 kernels; the untyped API links every pixel type's (~4 MB).
    let from = fir::images::TypedImageRef::<fir::pixels::U8x3>::from_buffer(sw, sh, src.as_raw())
        .map_err(|e| fail(&e))?;
    let mut buffer = vec![0u8; w as usize * h as usize * 3];
    let mut to = fir::images::TypedImage::<fir::pixels::U8x3>::from_buffer(w, h, &mut buffer)
        .map_err(|e| fail(&e))?;
    let algorithm = match filter {
        FilterType::Nearest => fir::ResizeAlg::Nearest,
        FilterType::Triangle => fir::ResizeAlg::Convolution(fir::FilterType::Bilinear),
        FilterType::CatmullRom => fir::ResizeAlg::Convolution(fir::FilterType::CatmullRom),
        FilterType::Gaussian => fir::ResizeAlg::Convolution(fir::FilterType::Gaussian),
        FilterType::Lanczos3 => fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3),
    };
    fir::Resizer::new()
        .resize_typed(
            &from,
            &mut to,
            &fir::ResizeOptions::new().resize_alg(algorithm),
        )
        .map_err(|e| fail(&e))?;
    drop(to);
    image::RgbImage::from_raw(w, h, buffer)
        .ok_or_else(|| "cannot resize the image: the result has the wrong size".to_string())
}

/// JPEG or PNG bytes to 8-bit RGB, refusing what would take unbounded memory or is damaged.
pub fn decode(bytes: &[u8]) -> Result<image::RgbImage, String> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read the image: {e}"))?;
    let name = match reader.format() {
        Some(ImageFormat::Jpeg) => {
            // A JPEG cut short still decodes (the missing rows come out grey): insist on the
            // end-of-image marker after the last scan.
            let last = |m: [u8; 2]| bytes.windows(2).rposition(|w| w == m);
            let (sos, eoi) = (last([0xFF, 0xDA]), last([0xFF, 0xD9]));
            if sos.is_none() || eoi.is_none_or(|e| sos.is_some_and(|s| e < s)) {
                return Err("the JPEG image is truncated (it has no end-of-image marker after its last scan)".into());
            }
            "JPEG"
        }
        Some(ImageFormat::Png) => "PNG",
        _ => return Err(
            "the b64 value is not a JPEG or PNG image (those are the formats this server decodes)"
                .into(),
        ),
    };
    // One decoder: its header gives the size, checked before any pixel is decoded.
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| format!("cannot read the {name} image header: {e}"))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(format!("the image is {w}x{h}: it has no pixels"));
    }
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS {
        return Err(format!(
            "the image is {w}x{h} ({:.1} megapixels); this server decodes images up to {} megapixels and {MAX_IMAGE_SIDE} pixels a side: scale it down first",
            (u64::from(w) * u64::from(h)) as f64 / 1e6,
            MAX_IMAGE_PIXELS / 1_000_000
        ));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8);
    let cannot = |e: image::ImageError| format!("the {name} image cannot be decoded: {e}");
    decoder.set_limits(limits).map_err(cannot)?;
    Ok(DynamicImage::from_decoder(decoder)
        .map_err(cannot)?
        .to_rgb8())
}

impl ClassOutput {
    /// The public outputs, in `emit` order, from the model's `[batch, classes]` output.
    pub fn postprocess(&self, raw: &Tensor) -> Result<Vec<Tensor>, String> {
        let values = raw
            .as_slice::<f32>()
            .ok_or_else(|| format!("model output is {}, not float32", raw.dtype()))?;
        let shape = raw.shape();
        if shape.len() != 2 || shape[1] != self.classes {
            return Err(format!(
                "model output has shape {shape:?}, expected [batch, {}]",
                self.classes
            ));
        }
        let batch = shape[0];
        let k = self.top_k;
        let mut classes = Vec::with_capacity(batch);
        let mut probs = Vec::with_capacity(batch * self.classes);
        let mut top_classes = Vec::with_capacity(batch * k);
        let mut top_probs = Vec::with_capacity(batch * k);
        for row in values.chunks(self.classes.max(1)) {
            let mut p: Vec<f32> = row.to_vec();
            if self.softmax {
                softmax(&mut p);
            }
            let mut order: Vec<usize> = (0..p.len()).collect();
            // NaN sorts last; ties keep the lower class first.
            order.sort_by(|&a, &b| p[b].partial_cmp(&p[a]).unwrap_or(std::cmp::Ordering::Less));
            classes.push(order[0]);
            top_classes.extend_from_slice(&order[..k]);
            top_probs.extend(order[..k].iter().map(|&i| p[i]));
            probs.extend_from_slice(&p);
        }
        let id = |c: usize| c as i64 + self.label_offset;
        let label = |c: usize| {
            self.labels
                .as_ref()
                .and_then(|l| l.get(c))
                .cloned()
                .unwrap_or_default()
        };
        let ids = |cs: &[usize]| cs.iter().map(|&c| id(c)).collect::<Vec<_>>();
        let names = |cs: &[usize]| cs.iter().map(|&c| label(c)).collect::<Vec<_>>();
        let built = |t: Result<Tensor, crate::tensor::TensorError>| {
            t.map_err(|e| format!("cannot build an output: {e}"))
        };
        self.emit
            .iter()
            .map(|e| match e {
                Emit::Classes => built(Tensor::from_vec(vec![batch], ids(&classes))),
                Emit::Labels => built(Tensor::from_vec(vec![batch], names(&classes))),
                Emit::Probabilities => {
                    built(Tensor::from_vec(vec![batch, self.classes], probs.clone()))
                }
                Emit::TopKClasses => built(Tensor::from_vec(vec![batch, k], ids(&top_classes))),
                Emit::TopKProbabilities => {
                    built(Tensor::from_vec(vec![batch, k], top_probs.clone()))
                }
                Emit::TopKLabels => built(Tensor::from_vec(vec![batch, k], names(&top_classes))),
            })
            .collect()
    }
}

fn softmax(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    if sum > 0.0 {
        for x in v.iter_mut() {
            *x /= sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let err = parse("[input]\nkind = \"image\"\n[output]\nlabels = \"meta/labels.txt\"\n")
            .unwrap_err();
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

    #[test]
    fn bad_images_are_refused_before_decoding() {
        assert!(decode(b"hello").unwrap_err().contains("not a JPEG or PNG"));
        // A PNG header claiming 20000 x 20000 pixels: refused from the header alone.
        let mut png = Vec::new();
        png.extend_from_slice(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR");
        png.extend_from_slice(&20000u32.to_be_bytes());
        png.extend_from_slice(&20000u32.to_be_bytes());
        png.extend_from_slice(&[8, 2, 0, 0, 0]);
        let crc = crc32(&png[12..]);
        png.extend_from_slice(&crc.to_be_bytes());
        for chunk in [&b"IDAT"[..], &b"IEND"[..]] {
            png.extend_from_slice(&0u32.to_be_bytes());
            png.extend_from_slice(chunk);
            png.extend_from_slice(&crc32(chunk).to_be_bytes());
        }
        let err = decode(&png).unwrap_err();
        assert!(err.contains("20000x20000"), "{err}");
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    0xEDB8_8320 ^ (crc >> 1)
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
