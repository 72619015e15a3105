//! image-styles: decodes JPEG, PNG and WebP uploads and writes derived
//! styles under `styles/<style>/<original path>` in the same volume, in the
//! original's format: `thumbnail` (100x100, cropped to fill) and `medium`
//! (640 pixels wide, never upscaled). Also answers on-demand requests for
//! either style.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, imageops::FilterType};
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
    let bytes = files::read(file)?;
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Unavailable(format!("cannot read the image: {e}")))?;
    let format = reader
        .format()
        .filter(|f| matches!(f, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP))
        .ok_or(Error::Unsupported)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|e| Error::Unavailable(format!("cannot decode the image: {e}")))?;
    Ok((image, format))
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

struct Styles;

impl Plugin for Styles {
    fn on_upload(upload: Upload) -> Result<Outcome, Error> {
        let (image, format) = match decode(&upload.file) {
            Ok(decoded) => decoded,
            Err(Error::Unavailable(reason)) => return Ok(Outcome::Reject(reason)),
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
        if !STYLES.contains(&request.style.as_str()) {
            return Err(Error::Unsupported);
        }
        let (image, format) = decode(&request.source)?;
        write_style(&image, format, &request.style, request.target)
    }
}

silo_sdk::export_plugin!(Styles);
