//! `GET /v1/export` (the traffic report in any format) and `GET /v1/graph.svg` (the
//! dependency graph of a neighbourhood, for the web page).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::{graph, render_with, Format, InboundExport, Meta};
use crate::api::{parse_since, query, ApiError, AppState};
use crate::auth::ReadAccess;
use crate::store::EdgeFilter;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/export", get(export))
        .route("/v1/graph.svg", get(graph_svg))
}

#[derive(Debug, Deserialize)]
struct ExportQuery {
    format: Option<String>,
    since: Option<String>,
    environment: Option<String>,
    host: Option<String>,
    service: Option<String>,
    /// Graph only: most nodes per column.
    max_nodes: Option<usize>,
}

async fn filter(s: &AppState, q: &ExportQuery) -> Result<(EdgeFilter, Meta), ApiError> {
    let since = parse_since(s, q.since.as_deref(), "since")?;
    let hosts = match q.host.as_deref().filter(|h| !h.is_empty()) {
        Some(h) => Some(s.patterns(h)?),
        None => None,
    };
    let service = q.service.clone().filter(|v| !v.is_empty());
    let environment = q.environment.clone().filter(|v| !v.is_empty());
    Ok((
        EdgeFilter {
            hosts,
            service: service.clone(),
            environment: environment.clone(),
            since,
        },
        Meta {
            generated_at: s.now(),
            since,
            environment,
            host: q.host.clone().filter(|v| !v.is_empty()),
            service,
            owners: Default::default(),
        },
    ))
}

async fn export(
    State(s): State<AppState>,
    _: ReadAccess,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let format: Format = q
        .format
        .as_deref()
        .unwrap_or("json")
        .parse()
        .map_err(ApiError::BadRequest)?;
    let (f, mut meta) = filter(&s, &q).await?;
    let rows = s.store.edges(&f).await?;
    // Issue 14: what inbound sidecars saw, attributed, beside the callers' edges.
    let (inbound_rows, attributions) = crate::query::inbound_attributed(
        s.store.as_ref(),
        &crate::store::InboundFilter {
            hosts: f.hosts.clone(),
            since: f.since,
        },
    )
    .await?;
    let inbound = InboundExport::build(
        &rows,
        &inbound_rows,
        &attributions,
        f.service.as_deref(),
        f.environment.as_deref(),
    );
    // Issue 16: each caller's owner, the callee-attributed ones too.
    let owners = s.workflow.owners.map(s.store.as_ref()).await?;
    let callers = rows
        .iter()
        .map(|r| (r.service.clone(), r.environment.clone()))
        .chain(
            inbound
                .rows
                .iter()
                .filter_map(|r| Some((r.service.clone()?, r.environment.clone()?))),
        );
    for key in callers {
        if let std::collections::btree_map::Entry::Vacant(v) = meta.owners.entry(key) {
            if let Some(o) = owners.of(&v.key().0, &v.key().1) {
                v.insert(o);
            }
        }
    }
    let body = render_with(format, &meta, &rows, &inbound).map_err(|error| {
        tracing::error!(%error, "Failed to render an export.");
        ApiError::Internal
    })?;
    let disposition = format!("inline; filename=\"whouses-report.{}\"", format.extension());
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).map_err(|_| ApiError::Internal)?,
            ),
        ],
        body,
    )
        .into_response())
}

async fn graph_svg(
    State(s): State<AppState>,
    _: ReadAccess,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let (f, _) = filter(&s, &q).await?;
    let rows = s.store.edges(&f).await?;
    let opts = graph::Options {
        max_per_side: q.max_nodes.unwrap_or(40).clamp(1, 500),
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("image/svg+xml"),
        )],
        graph::svg(&rows, &opts),
    )
        .into_response())
}
