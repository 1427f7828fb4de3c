//! Image inputs: how a client's JPEG or PNG (or 0-1 pixels) becomes one batch row of the
//! model's input: decoded with bounded memory, resized (fast_image_resize), cropped, normalized
//! and laid out as `[input]` of `signature.toml` says.

use image::imageops::FilterType;
use image::{ImageBuffer, Pixel, Rgb};
use serde::Deserialize;

pub use super::decode::{decode, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE};
use super::{find, DType, Signature};

/// `[input]` of `signature.toml`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InputFile {
    pub(super) name: Option<String>,
    pub(super) model_input: Option<String>,
    pub(super) kind: String,
    pub(super) layout: Option<String>,
    pub(super) size: Option<[usize; 2]>,
    pub(super) resize: Option<String>,
    pub(super) filter: Option<String>,
    pub(super) mean: Option<Vec<f32>>,
    pub(super) std: Option<Vec<f32>>,
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

/// `[input]` of `signature.toml`, checked against the model's input.
pub(super) fn image_input(f: InputFile, model: &Signature) -> Result<ImageInput, String> {
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
