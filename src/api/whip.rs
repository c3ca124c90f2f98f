//! WHIP (RFC 9725): a dealer publishes a table camera at `POST /whip/{table}[?camera=NAME]`.
//!
//! Needs a dealer or operator token for the table. A second publisher for the same camera
//! replaces the first (the media plane closes the old session).

use super::ApiState;
use super::resource::{self, Endpoint};
use crate::auth::TokenRole;
use crate::media::Role;
use axum::Router;

/// The WHIP endpoint.
pub struct Whip;

impl Endpoint for Whip {
    const KIND: &'static str = "whip";
    const ROLE: Role = Role::Publisher;
    const ROLES: &'static [TokenRole] = &[TokenRole::Dealer, TokenRole::Operator];
    const NEED: &'static str = "dealer or operator";
}

pub fn routes(max_body: usize) -> Router<ApiState> {
    resource::routes::<Whip>(max_body)
}
