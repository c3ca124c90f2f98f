//! The pages: `/` (index), `/play/{table}`, `/dealer/{table}`, `/ops`, and `/web/*` for their
//! scripts and styles, all from `[http] web_root`. The pages read the table id from the URL.

use axum::Router;
use axum::routing::get_service;
use std::path::Path;
use tower_http::services::{ServeDir, ServeFile};

pub fn routes(web_root: &Path) -> Router {
    let page = |name: &str| get_service(ServeFile::new(web_root.join(name)));
    Router::new()
        .route("/", page("index.html"))
        .route("/play/{table}", page("play.html"))
        .route("/dealer/{table}", page("dealer.html"))
        .route("/ops", page("ops.html"))
        .nest_service("/web", ServeDir::new(web_root))
}
