//! image-styles: decodes JPEG, PNG and WebP uploads and writes derived
//! styles under `styles/<style>/<original path>` in the same volume, in the
//! original's format: `thumbnail` (100x100, cropped to fill) and `medium`
//! (640 pixels wide, never upscaled). Also answers on-demand requests for
//! either style, and renders dynamic image variants (the `image` style,
//! whose transformation the host passes as parameters).

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageFormat, ImageReader, imageops::FilterType};
use jpeg_decoder::PixelFormat;
use silo_sdk::{DeriveRequest, DerivedFile, Error, Location, Outcome, Plugin, Upload, WriteOptions, files};

/// Largest image accepted, per side; bounds decoder memory.
const MAX_SIDE: u32 = 12_000;
/// Most bytes the decoder may allocate.
const MAX_DECODE_ALLOC: u64 = 400 * 1024 * 1024;

const STYLES: [&str; 2] = ["thumbnail", "medium"];

fn render(image: &DynamicImage, style: &str) -> Option<DynamicImage> {
    match style {
        "thumbnail" => Some(image.resize_to_fill(100, 100, FilterType::Triangle)),
        "medium" if image.width() > 640 => Some(image.resize(640, u32::MAX, FilterType::Triangle)),
        "medium" => Some(image.clone()),
        _ => None,
    }
}

fn decode(file: &Location) -> Result<(DynamicImage, ImageFormat), Error> {
    decode_for(file, |_, _| 1.0)
}

/// Decode `file`; `scale_of(w, h)` says by how much the caller will scale
/// the (upright) image. A JPEG to be shrunk below half is decoded at 1/2,
/// 1/4 or 1/8 of its size (still at least twice the final size), as
/// libvips shrinks on load: a fraction of the work and memory.
fn decode_for(file: &Location, scale_of: impl Fn(u32, u32) -> f64) -> Result<(DynamicImage, ImageFormat), Error> {
    let bytes = files::read(file)?;
    let mut reader = ImageReader::new(Cursor::new(&bytes[..]))
        .with_guessed_format()
        .map_err(|e| Error::Unavailable(format!("cannot read the image: {e}")))?;
    let format = reader
        .format()
        .filter(|f| {
            matches!(
                f,
                ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif
            )
        })
        .ok_or(Error::Unsupported)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    // Decoded as the camera held it: EXIF orientation applied.
    let refused = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => Error::TooLarge,
        e => Error::Forbidden(format!("cannot decode the image: {e}")),
    };
    // The limits are checked here, against the declared size.
    let mut decoder = reader.into_decoder().map_err(refused)?;
    let orientation = image::ImageDecoder::orientation(&mut decoder).map_err(refused)?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    let upright = match orientation {
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH => {
            (h, w)
        }
        _ => (w, h),
    };
    let by = scale_of(upright.0, upright.1);
    // Only a shortcut: what it cannot read (CMYK, 16-bit grey, a file the
    // full decoder reads as far as it goes) takes the full decoder.
    let shrunk = if format == ImageFormat::Jpeg && by < 0.5 {
        shrunk_jpeg(&bytes, w, h, by)
    } else {
        None
    };
    let mut image = match shrunk {
        Some(image) => image,
        None => DynamicImage::from_decoder(decoder).map_err(refused)?,
    };
    image.apply_orientation(orientation);
    Ok((image, format))
}

/// A `w` x `h` JPEG decoded at the smallest scale that keeps at least
/// twice `by` of each side, if this decoder reads it whole.
fn shrunk_jpeg(bytes: &[u8], w: u32, h: u32, by: f64) -> Option<DynamicImage> {
    let mut jpeg = jpeg_decoder::Decoder::new(bytes);
    jpeg.set_max_decoding_buffer_size(MAX_DECODE_ALLOC as usize);
    jpeg.read_info().ok()?;
    let format = jpeg.info()?.pixel_format;
    if !matches!(format, PixelFormat::L8 | PixelFormat::RGB24) {
        return None;
    }
    let want = |n: u32| (f64::from(n) * by * 2.0).ceil().clamp(1.0, f64::from(u16::MAX)) as u16;
    let (sw, sh) = jpeg.scale(want(w), want(h)).ok()?;
    let pixels = jpeg.decode().ok()?;
    let (sw, sh) = (u32::from(sw), u32::from(sh));
    match format {
        PixelFormat::L8 => image::GrayImage::from_raw(sw, sh, pixels).map(DynamicImage::ImageLuma8),
        _ => image::RgbImage::from_raw(sw, sh, pixels).map(DynamicImage::ImageRgb8),
    }
}

fn write_style(image: &DynamicImage, format: ImageFormat, style: &str, target: Location) -> Result<DerivedFile, Error> {
    let styled = render(image, style).ok_or(Error::Unsupported)?;
    // JPEG cannot hold alpha.
    let styled = if format == ImageFormat::Jpeg {
        DynamicImage::ImageRgb8(styled.to_rgb8())
    } else {
        styled
    };
    let mut out = Cursor::new(Vec::new());
    styled
        .write_to(&mut out, format)
        .map_err(|e| Error::Unavailable(format!("cannot encode the {style} style: {e}")))?;
    let info = files::write_with(
        &target,
        out.get_ref(),
        WriteOptions::new().content_type(format.to_mime_type()),
    )?;
    Ok(DerivedFile {
        file: target,
        info,
        style: Some(style.into()),
        width: Some(styled.width()),
        height: Some(styled.height()),
    })
}

/// `w,h` of a parameter.
fn pair(request: &DeriveRequest, key: &str) -> Result<Option<(u32, u32)>, Error> {
    let Some(text) = request.param(key) else {
        return Ok(None);
    };
    let bad = || Error::InvalidPath(format!("parameter {key}={text} is not `w,h`"));
    let (w, h) = text.split_once(',').ok_or_else(bad)?;
    Ok(Some((w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?)))
}

fn number(request: &DeriveRequest, key: &str) -> Result<Option<u32>, Error> {
    request
        .param(key)
        .map(|t| {
            t.parse()
                .map_err(|_| Error::InvalidPath(format!("parameter {key}={t} is not a number")))
        })
        .transpose()
}

/// `image` scaled to exactly `w` x `h` (the caller keeps the aspect): a
/// fast area average to twice that size first when shrinking by more, so
/// that the filter runs on few pixels (as libvips shrinks on load).
fn shrink(image: &DynamicImage, w: u32, h: u32) -> DynamicImage {
    let (w, h) = (w.max(1), h.max(1));
    if image.width() > w.saturating_mul(2) && image.height() > h.saturating_mul(2) {
        image
            .thumbnail_exact(w * 2, h * 2)
            .resize_exact(w, h, FilterType::Triangle)
    } else {
        image.resize_exact(w, h, FilterType::Triangle)
    }
}

fn scaled(n: u32, by: f64) -> u32 {
    ((f64::from(n) * by).round() as u32).max(1)
}

/// Scale down (never up) to fill `w` x `h`, cropping the overflow around
/// the centre; an image smaller than that is cropped only.
fn cover(image: DynamicImage, w: u32, h: u32) -> DynamicImage {
    if image.width() <= w && image.height() <= h {
        return image;
    }
    if image.width() < w || image.height() < h {
        let (cw, ch) = (w.min(image.width()), h.min(image.height()));
        return image.crop_imm((image.width() - cw) / 2, (image.height() - ch) / 2, cw, ch);
    }
    let by = (f64::from(w) / f64::from(image.width())).max(f64::from(h) / f64::from(image.height()));
    let (sw, sh) = (scaled(image.width(), by).max(w), scaled(image.height(), by).max(h));
    let shrunk = shrink(&image, sw, sh);
    shrunk.crop_imm((sw - w) / 2, (sh - h) / 2, w, h)
}

/// Scale down (never up) to fit inside `w` x `h`.
fn inside(image: DynamicImage, w: u32, h: u32) -> DynamicImage {
    if image.width() <= w && image.height() <= h {
        return image;
    }
    let by = (f64::from(w) / f64::from(image.width())).min(f64::from(h) / f64::from(image.height()));
    let (sw, sh) = (scaled(image.width(), by).min(w), scaled(image.height(), by).min(h));
    shrink(&image, sw, sh)
}

/// By how much [`variant`] scales a `w` x `h` image (1 where it does not
/// shrink it, or where a parameter is malformed: `variant` says so).
fn planned_scale(request: &DeriveRequest, w: u32, h: u32) -> f64 {
    let (w, h) = (f64::from(w), f64::from(h));
    let fill = |(tw, th): (u32, u32)| (f64::from(tw) / w).max(f64::from(th) / h);
    let fit = |(tw, th): (u32, u32)| (f64::from(tw) / w).min(f64::from(th) / h);
    let given = |key| pair(request, key).ok().flatten();
    let by = if let Some(size) = given("resize") {
        fill(size)
    } else if let Some(size) = given("fit").or_else(|| given("lb")) {
        fit(size)
    } else {
        let (tw, th) = (number(request, "w").ok().flatten(), number(request, "h").ok().flatten());
        match (tw, th, request.param("cover")) {
            (Some(tw), Some(th), Some("1")) => fill((tw, th)),
            (None, None, _) => 1.0,
            (tw, th, _) => fit((tw.unwrap_or(u32::MAX), th.unwrap_or(u32::MAX))),
        }
    };
    by.min(1.0)
}

/// Render a dynamic image variant: crop, then one of resize (cover), fit
/// (inside), lb (letterbox on black), or w/h; then encode.
fn variant(request: &DeriveRequest) -> Result<DerivedFile, Error> {
    // A crop's pixels are the original's: decoded at full size.
    let (mut image, _) = if request.param("crop").is_some() {
        decode(&request.source)?
    } else {
        decode_for(&request.source, |w, h| planned_scale(request, w, h))?
    };
    if let Some(text) = request.param("crop") {
        let parts: Vec<&str> = text.split(',').collect();
        let [x, y, w, h] = parts[..] else {
            return Err(Error::InvalidPath(format!("parameter crop={text}")));
        };
        let dims = [image.width(), image.height()];
        let resolve = |i: usize, part: &str| -> Result<u32, Error> {
            let bad = || Error::InvalidPath(format!("parameter crop={text}"));
            match part.strip_suffix("px") {
                Some(n) => n.parse::<f64>().map(|n| n as u32).map_err(|_| bad()),
                None => part
                    .parse::<f64>()
                    .map(|p| (f64::from(dims[i % 2]) * p / 100.0).round() as u32)
                    .map_err(|_| bad()),
            }
        };
        let (x, y) = (resolve(0, x)?.min(dims[0]), resolve(1, y)?.min(dims[1]));
        let (w, h) = (resolve(2, w)?.min(dims[0] - x), resolve(3, h)?.min(dims[1] - y));
        if w == 0 || h == 0 {
            return Err(Error::Forbidden(format!(
                "crop={text} leaves nothing of a {}x{} image",
                dims[0], dims[1]
            )));
        }
        image = image.crop_imm(x, y, w, h);
    }
    if let Some((w, h)) = pair(request, "resize")? {
        image = cover(image, w, h);
    } else if let Some((w, h)) = pair(request, "fit")? {
        image = inside(image, w, h);
    } else if let Some((w, h)) = pair(request, "lb")? {
        let fitted = inside(image, w, h);
        let mut canvas = image::RgbaImage::from_pixel(w, h, image::Rgba([0, 0, 0, 255]));
        let (x, y) = ((w - fitted.width()) / 2, (h - fitted.height()) / 2);
        image::imageops::overlay(&mut canvas, &fitted.to_rgba8(), i64::from(x), i64::from(y));
        image = DynamicImage::ImageRgba8(canvas);
    } else {
        let (w, h) = (number(request, "w")?, number(request, "h")?);
        image = match (w, h, request.param("cover")) {
            (Some(w), Some(h), Some("1")) => cover(image, w, h),
            (None, None, _) => image,
            (w, h, _) => inside(image, w.unwrap_or(u32::MAX), h.unwrap_or(u32::MAX)),
        };
    }
    let quality = number(request, "quality")?.unwrap_or(82).clamp(1, 100) as u8;
    let format = match request.param("format") {
        Some("jpeg") => ImageFormat::Jpeg,
        Some("png") => ImageFormat::Png,
        Some("webp") => ImageFormat::WebP,
        other => return Err(Error::InvalidPath(format!("parameter format={other:?}"))),
    };
    // Pixels only are encoded: no EXIF, XMP or colour profile is carried
    // over, whatever `strip` says.
    let mut out = Cursor::new(Vec::new());
    let encoded = match format {
        ImageFormat::Jpeg => {
            let rgb = DynamicImage::ImageRgb8(image.to_rgb8());
            rgb.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality))
        }
        // The WebP encoder is lossless; `quality` does not apply.
        ImageFormat::WebP => {
            let rgba = DynamicImage::ImageRgba8(image.to_rgba8());
            rgba.write_to(&mut out, ImageFormat::WebP)
        }
        _ => {
            // 16-bit images become 8-bit, as browsers show them.
            let eight = if image.color().has_alpha() {
                DynamicImage::ImageRgba8(image.to_rgba8())
            } else {
                DynamicImage::ImageRgb8(image.to_rgb8())
            };
            eight.write_to(&mut out, format)
        }
    };
    encoded.map_err(|e| Error::Unavailable(format!("cannot encode the variant: {e}")))?;
    let info = files::write_with(
        &request.target,
        out.get_ref(),
        WriteOptions::new().content_type(format.to_mime_type()),
    )?;
    Ok(DerivedFile {
        file: request.target.clone(),
        info,
        style: Some("image".into()),
        width: Some(image.width()),
        height: Some(image.height()),
    })
}

struct Styles;

impl Plugin for Styles {
    fn on_upload(upload: Upload) -> Result<Outcome, Error> {
        let (image, format) = match decode(&upload.file) {
            Ok(decoded) => decoded,
            Err(Error::Unavailable(reason) | Error::Forbidden(reason)) => return Ok(Outcome::Reject(reason)),
            Err(Error::TooLarge) => {
                return Ok(Outcome::Reject(format!(
                    "the image is larger than {MAX_SIDE} pixels a side or {} MiB decoded",
                    MAX_DECODE_ALLOC >> 20
                )));
            }
            Err(e) => return Err(e),
        };
        let mut derived = Vec::new();
        for style in STYLES {
            let target = Location::new(
                upload.file.volume.clone(),
                format!("styles/{style}/{}", upload.file.path),
            );
            derived.push(write_style(&image, format, style, target)?);
        }
        Ok(Outcome::Accept(derived))
    }

    fn on_derive(request: DeriveRequest) -> Result<DerivedFile, Error> {
        if request.style == "image" {
            return variant(&request);
        }
        if !STYLES.contains(&request.style.as_str()) {
            return Err(Error::Unsupported);
        }
        let (image, format) = decode(&request.source)?;
        write_style(&image, format, &request.style, request.target)
    }
}

silo_sdk::export_plugin!(Styles);
