//! The example plugins, compiled for wasm32-wasip2 by the build script and
//! embedded, so that the built-in default config runs anywhere.

/// `plugins/upload-guard`: content type must match the bytes; size limit.
pub const UPLOAD_GUARD: &[u8] = include_bytes!(env!("SILO_BUNDLED_UPLOAD_GUARD"));
/// `plugins/image-styles`: thumbnail and medium styles for JPEG, PNG, WebP.
pub const IMAGE_STYLES: &[u8] = include_bytes!(env!("SILO_BUNDLED_IMAGE_STYLES"));

/// The bytes of `builtin:<name>`.
pub fn component(name: &str) -> Option<&'static [u8]> {
    match name {
        "upload-guard" => Some(UPLOAD_GUARD),
        "image-styles" => Some(IMAGE_STYLES),
        _ => None,
    }
}
