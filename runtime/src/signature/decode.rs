//! A client's JPEG or PNG bytes to 8-bit RGB pixels (the `image` crate's decoders), with the
//! size checked from the header before any pixel is decoded, so memory stays bounded.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

/// Images larger than this (width x height) are refused before decoding: memory stays bounded.
pub const MAX_IMAGE_PIXELS: u64 = 40_000_000;
/// Neither side may exceed this.
pub const MAX_IMAGE_SIDE: u32 = 16_384;

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
        _ => {
            return Err(
                "the image file is not a JPEG or PNG (those are the formats this server decodes)"
                    .into(),
            )
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
