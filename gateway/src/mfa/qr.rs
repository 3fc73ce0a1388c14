//! The enrolment QR code as SVG, so a frontend shows it with no library.

use crate::error::{Error, Result};

/// A QR code of `text` as a standalone SVG document (black on white, at
/// least 200 px square, with the quiet zone).
pub fn svg(text: &str) -> Result<String> {
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M)
        .map_err(|e| Error::Internal(format!("QR code: {e}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build())
}
