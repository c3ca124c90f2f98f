//! WHEP: a player watches a table camera at `POST /whep/{table}[?camera=NAME]`.
//!
//! Any token for the table will do (player, dealer or operator): a dealer may watch its own
//! table, for instance on a return monitor. In a cluster every serving node takes the offer: a
//! node that is not the table's origin pulls the video from it (`media::relay`).

use super::ApiState;
use super::resource::{self, Endpoint};
use crate::auth::TokenRole;
use crate::media::Role;
use axum::Router;

/// The WHEP endpoint.
pub struct Whep;

impl Endpoint for Whep {
    const KIND: &'static str = "whep";
    const ROLE: Role = Role::Subscriber;
    const ROLES: &'static [TokenRole] =
        &[TokenRole::Player, TokenRole::Dealer, TokenRole::Operator];
    const NEED: &'static str = "player, dealer or operator";
}

pub fn routes(max_body: usize) -> Router<ApiState> {
    resource::routes::<Whep>(max_body)
}

/// Another node's pull of a camera (the cascade, `media::relay`): a WHEP session at the
/// table's origin, `POST /cluster/v1/relay/{table}[?camera=NAME]`, for node credentials only.
pub struct Relay;

impl Endpoint for Relay {
    const KIND: &'static str = crate::media::relay::RELAY_PATH;
    const ROLE: Role = Role::Subscriber;
    const ROLES: &'static [TokenRole] = &[TokenRole::Operator];
    const NEED: &'static str = "a cluster node";
    const RELAY: bool = true;
}

pub fn relay_routes(max_body: usize) -> Router<ApiState> {
    resource::routes::<Relay>(max_body)
}
