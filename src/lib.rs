//! tablecast: a WebRTC SFU and control plane for live-dealer tables.
//!
//! Module map (dependency arrows point down the list):
//! - [`app`]: the composition root — picks implementations, spawns workers and actors, builds the
//!   router, handles graceful shutdown.
//! - [`config`], [`ids`] (typed IDs from one macro), [`telemetry`], [`metrics`], [`limits`]
//!   (caps and rates on what one user or address may open), [`turn`] (TURN credentials for
//!   clients, from the secret shared with the TURN server).
//! - [`api`]: the axum layer — WHIP, WHEP, tokens, health, metrics, pages; `api/error.rs` is the
//!   one place where errors become HTTP responses.
//! - [`media`]: workers, peers, router, subscribers, keyframes — our own sockets and event loop
//!   around webrtc-rs's sans-IO `rtc`.
//! - [`table`]: the sans-IO round state machine, bets, totals and settlement (driven by time as an
//!   input); [`protocol`]: the versioned JSON wire messages of the control plane.
//! - [`client`]: a light WebRTC WHIP/WHEP client on the same stack, for tests and `tablecast bench`.
//! - [`bench`]: `tablecast bench`, the load tool (players per core, added latency, Janus beside).
//! - `fuzzing` (hidden): entry points for the fuzz targets in `fuzz/`.

pub mod api;
pub mod app;
pub mod auth;
pub mod bench;
pub mod certs;
pub mod client;
pub mod cluster;
pub mod config;
pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
pub mod limits;
pub mod media;
pub mod metrics;
pub mod protocol;
pub mod store;
pub mod table;
pub mod telemetry;
pub mod turn;
