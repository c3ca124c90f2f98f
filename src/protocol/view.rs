//! `video.view`: how a player's page shows the video (rendered size, visibility, quality
//! preference), for the node's choice of simulcast layer.

use serde::{Deserialize, Deserializer, Serialize};

/// The largest rendered width or height a `video.view` may state, in device pixels. Larger
/// values are read as this (no screen is wider, and no layer is as large).
pub const MAX_VIEW_PX: u16 = 16384;

/// A player's quality preference: the player page's quality menu.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewQuality {
    /// The highest layer that fits both the link and the rendered size.
    #[default]
    Auto,
    /// The highest layer the link carries, whatever the rendered size.
    High,
    /// The lowest layer.
    Low,
}

/// A rendered size in device pixels: any number from 0 up, rounded to a whole pixel and capped
/// at [`MAX_VIEW_PX`] (`clientWidth × devicePixelRatio` is often fractional).
pub(super) fn view_px<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let px = f64::deserialize(d)?;
    if !px.is_finite() || px < 0.0 {
        return Err(serde::de::Error::custom(format!(
            "a rendered size must be a number of device pixels from 0 up, not {px}"
        )));
    }
    // In range after the clamp, so the cast neither wraps nor saturates.
    Ok(px.round().min(f64::from(MAX_VIEW_PX)) as u16)
}
