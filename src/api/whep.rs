//! WHEP: a player watches a table camera at `POST /whep/{table}[?camera=NAME]`.
//!
//! Any token for the table will do (player, dealer or operator): a dealer may watch its own
//! table, for instance on a return monitor.

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
