//! A light WHIP/WHEP client on the same sans-IO stack as the node: a synthetic dealer
//! ([`Publisher`]) and a player that counts what it receives ([`Subscriber`]). The integration
//! tests and `tablecast bench` use it; it never decodes media.
//!
//! In a cluster, a POST to a node that does not own the table is redirected (`307`) to the
//! owner; the client follows it with its token and waits out a `503` while the table moves, and
//! its PATCH and DELETE go to the node that made the session (`driver::negotiate`).

pub(crate) mod driver;
mod publisher;
mod reports;
mod rtx;
mod subscriber;
pub mod synth;

pub use publisher::{PublishOptions, Publisher, PublisherStats};
pub use subscriber::{Received, SubscribeOptions, Subscriber, SubscriberStats};

/// ICE settings of every client peer connection (the test clients and `tablecast bench`'s
/// dealer and players).
///
/// rtc's agent sends its first connectivity check one check interval after it starts, 200 ms by
/// default; a browser sends its first check as soon as it has the node's candidate. A client
/// left at the default measured every join 200 ms longer than a browser's, so the interval is
/// 25 ms here, with as many attempts as make the same 1.5 s before a pair is given up.
pub(crate) fn ice_settings(
    engine: rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder,
) -> rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder {
    engine.with_ice_connection_attempts(Some(std::time::Duration::from_millis(25)), Some(60))
}

/// Where and as whom a client connects.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://127.0.0.1:8080` or `https://…`
    pub base_url: String,
    pub table: String,
    pub camera: Option<String>,
    pub token: String,
}

/// Why a client could not connect or act.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("server refused with {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("WebRTC: {0}")]
    Rtc(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("not connected within {0:?}")]
    Timeout(std::time::Duration),
}

impl From<rtc::shared::error::Error> for ClientError {
    fn from(e: rtc::shared::error::Error) -> Self {
        ClientError::Rtc(e.to_string())
    }
}
