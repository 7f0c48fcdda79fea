//! The web page at `/`: it opens on the **dashboard** (watches and what fired, migrations
//! in progress, hosts going quiet, fleet reporting health), with a **host's page**
//! (callers, verdict, a timeline chart per caller drawn as inline SVG, its migrations),
//! the **migration view** with the ticket's checklist, the "who uses …" search with the
//! callers table and the `check` verdict, a hosts view sorted by how long they have been
//! quiet, a services view with reporting health, and the dependency graph. Every view
//! has its own URL (`#/`, `#/host/NAME`, `#/migration?from=…&to=…`, `#/search?host=…`,
//! `#/hosts` …; the older `/?host=H` still opens the search), so a link can be pasted
//! into a ticket. One HTML page with our own small script and styles, served from the
//! binary: no CDN, works offline. The page is static; the data it fetches goes through
//! the API, so read tokens apply (the page asks for one).

use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::api::AppState;

const PAGE: &str = concat!(
    include_str!("page.html"),
    "<style>\n",
    include_str!("page.css"),
    "</style>\n<script>\n",
    include_str!("page.js"),
    "</script>\n</body>\n</html>\n"
);

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(page))
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:",
                ),
            ),
        ],
        PAGE,
    )
}
