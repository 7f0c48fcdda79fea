//! The decommission workflow's answers (read token): `GET /v1/migration` (JSON, or the
//! ticket's Markdown checklist with `format=markdown`), `GET /v1/diff`,
//! `GET /v1/timeline` and `GET /v1/dashboard`. Watches are in `watch/api.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use whouses_wire::decom::{
    DashboardResponse, FleetHealth, MigrationProgress, QuietingHost, SilentInstance,
};
use whouses_wire::{counts, Timestamp, OTHER_HOST};

use super::{parse_since, query, ApiError, AppState};
use crate::auth::ReadAccess;
use crate::store::{EdgeFilter, WindowCalls};
use crate::timeline::Step;

/// The window the migration view looks at unless told otherwise.
const DEFAULT_MIGRATION_WINDOW: &str = "30d";
/// The window a timeline covers unless told otherwise.
const DEFAULT_TIMELINE_WINDOW: &str = "30d";
/// Callers a timeline shows by default, and at most.
const DEFAULT_TIMELINE_CALLERS: usize = 20;
const MAX_TIMELINE_CALLERS: usize = 200;
/// The dashboard's fleet health counts instances that reported within this.
const FLEET_WINDOW: Duration = Duration::from_secs(86_400);
/// Rows the dashboard lists per section at most.
const DASHBOARD_ROWS: usize = 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/migration", get(migration))
        .route("/v1/diff", get(diff))
        .route("/v1/timeline", get(timeline))
        .route("/v1/dashboard", get(dashboard))
}

fn required<'a>(v: &'a Option<String>, name: &str, example: &str) -> Result<&'a str, ApiError> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "missing query parameter `{name}` (e.g. ?{name}={example})"
            ))
        })
}

#[derive(Debug, Deserialize)]
struct MigrationQuery {
    from: Option<String>,
    to: Option<String>,
    since: Option<String>,
    format: Option<String>,
}

async fn migration(
    State(s): State<AppState>,
    _: ReadAccess,
    q: Result<Query<MigrationQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let from = required(&q.from, "from", "old.internal")?;
    let to = required(&q.to, "to", "new.internal")?;
    let markdown = match q.format.as_deref().unwrap_or("json") {
        "json" => false,
        "markdown" | "md" => true,
        other => {
            return Err(ApiError::BadRequest(format!(
                "invalid format {other:?}: expected json or markdown"
            )))
        }
    };
    let since = parse_since(
        &s,
        Some(q.since.as_deref().unwrap_or(DEFAULT_MIGRATION_WINDOW)),
        "since",
    )?
    .unwrap_or_default();
    let mut r = crate::migration::migration(
        s.store.as_ref(),
        (from, s.patterns(from)?),
        (to, s.patterns(to)?),
        since,
        s.now(),
    )
    .await?;
    let owners = s.workflow.owners.map(s.store.as_ref()).await?;
    crate::migration::fill_owners(&mut r, &owners);
    if markdown {
        return Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/markdown; charset=utf-8"),
            )],
            crate::migration::checklist(&r),
        )
            .into_response());
    }
    Ok(Json(r).into_response())
}

#[derive(Debug, Deserialize)]
struct DiffQuery {
    before: Option<String>,
    after: Option<String>,
    host: Option<String>,
    service: Option<String>,
    environment: Option<String>,
    factor: Option<String>,
}

async fn diff(
    State(s): State<AppState>,
    _: ReadAccess,
    q: Result<Query<DiffQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let now = s.now();
    let before =
        crate::diff::parse_period(required(&q.before, "before", "14d..7d")?, now, "before")
            .map_err(ApiError::BadRequest)?;
    let after = crate::diff::parse_period(required(&q.after, "after", "7d..now")?, now, "after")
        .map_err(ApiError::BadRequest)?;
    let factor = match q.factor.as_deref() {
        None => 2.0,
        Some(f) => f
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f > 1.0 && *f <= 1e6)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "invalid factor {f:?}: a number above 1 (2 = doubled or halved)"
                ))
            })?,
    };
    let host = q.host.as_deref().map(str::trim).filter(|h| !h.is_empty());
    let filter = EdgeFilter {
        hosts: host.map(|h| s.patterns(h)).transpose()?,
        service: q.service.clone().filter(|v| !v.trim().is_empty()),
        environment: q.environment.clone().filter(|v| !v.trim().is_empty()),
        since: None,
    };
    let mut r = crate::diff::diff(s.store.as_ref(), &filter, before, after, factor).await?;
    r.host = host.map(String::from);
    Ok(Json(r).into_response())
}

#[derive(Debug, Deserialize)]
struct TimelineQuery {
    host: Option<String>,
    since: Option<String>,
    step: Option<String>,
    environment: Option<String>,
    limit: Option<usize>,
}

async fn timeline(
    State(s): State<AppState>,
    _: ReadAccess,
    q: Result<Query<TimelineQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let host = required(&q.host, "host", "tis-reference.internal")?;
    let now = s.now();
    let since = parse_since(
        &s,
        Some(q.since.as_deref().unwrap_or(DEFAULT_TIMELINE_WINDOW)),
        "since",
    )?
    .unwrap_or_default();
    let step = match q.step.as_deref() {
        Some(v) => Step::parse(v).map_err(ApiError::BadRequest)?,
        None => Step::default_for(since, now),
    };
    let limit = q
        .limit
        .unwrap_or(DEFAULT_TIMELINE_CALLERS)
        .clamp(1, MAX_TIMELINE_CALLERS);
    let filter = EdgeFilter {
        hosts: Some(s.patterns(host)?),
        environment: q.environment.clone().filter(|v| !v.trim().is_empty()),
        ..Default::default()
    };
    let owners = s.workflow.owners.map(s.store.as_ref()).await?;
    let r = crate::timeline::timeline(
        s.store.as_ref(),
        host,
        &filter,
        since,
        now,
        step,
        limit,
        &owners,
    )
    .await?
    .map_err(ApiError::BadRequest)?;
    Ok(Json(r).into_response())
}

async fn dashboard(State(s): State<AppState>, _: ReadAccess) -> Result<Response, ApiError> {
    let now = s.now();
    let store = s.store.as_ref();

    // Fleet health: instances heard from within a day, and which of them still report.
    let seen_after = now.saturating_sub(FLEET_WINDOW);
    let recent: Vec<_> = store
        .instances()
        .await?
        .into_iter()
        .filter(|i| i.last_report >= seen_after)
        .collect();
    let mut silent: Vec<SilentInstance> = recent
        .iter()
        .filter(|i| {
            let grace =
                3 * i64::try_from(i.flush_interval_ms.max(1_000)).unwrap_or(i64::MAX / 4) + 5_000;
            now.0.saturating_sub(i.last_report.0) > grace
        })
        .map(|i| SilentInstance {
            instance: i.instance.clone(),
            service: i.service.clone(),
            environment: i.environment.clone(),
            last_report: i.last_report,
        })
        .collect();
    silent.sort_by(|a, b| {
        a.last_report
            .cmp(&b.last_report)
            .then(a.instance.cmp(&b.instance))
    });
    let fleet = FleetHealth {
        instances: recent.len(),
        reporting: recent.len() - silent.len(),
        window_ms: FLEET_WINDOW.as_millis() as u64,
        silent: silent.into_iter().take(DASHBOARD_ROWS).collect(),
    };

    let watches = crate::watch::api::watches(&s).await?;

    // Migrations the watches track (`--to`), over the migration view's default window.
    let window = parse_since(&s, Some(DEFAULT_MIGRATION_WINDOW), "since")?.unwrap_or_default();
    let mut migrations = Vec::new();
    for w in watches.iter().filter(|w| w.to.is_some()) {
        let Some(to) = w.to.as_deref() else { continue };
        let (Ok(old), Ok(new)) = (s.patterns(&w.host), s.patterns(to)) else {
            continue;
        };
        let r = crate::migration::migration(store, (&w.host, old), (to, new), window, now).await?;
        migrations.push(MigrationProgress {
            watch: w.id,
            from: w.host.clone(),
            to: to.to_string(),
            cutoff: w.from,
            summary: r.summary,
        });
    }

    // Hosts going quiet: calls in the last 7 days under half those of the 7 before. Each
    // edge's calls in a window come from one bucket row per edge (`fleet_window_calls`),
    // not from every bucket of the whole fleet in the window; the two windows at once.
    let day = 86_400_000;
    let (last7, last14) = tokio::try_join!(
        store.fleet_window_calls(Timestamp(now.0.saturating_sub(7 * day))),
        store.fleet_window_calls(Timestamp(now.0.saturating_sub(14 * day))),
    )?;
    /// Calls in the last 7 days, in the last 14, the last call, the callers.
    type HostSums = (u64, u64, Timestamp, Vec<(String, String)>);
    let mut hosts: BTreeMap<(String, u16), HostSums> = BTreeMap::new();
    // Edges called within the window, (other) aside.
    let called = |w: &&WindowCalls| w.calls > 0 && w.edge.host != OTHER_HOST;
    for w in last14.iter().filter(called) {
        let e = &w.edge;
        let h =
            hosts
                .entry((e.host.clone(), e.port))
                .or_insert((0, 0, e.counts.last_seen, Vec::new()));
        h.1 = counts::add(h.1, w.calls);
        h.2 = h.2.max(e.counts.last_seen);
        let who = (e.service.clone(), e.environment.clone());
        if !h.3.contains(&who) {
            h.3.push(who);
        }
    }
    for w in last7.iter().filter(called) {
        if let Some(h) = hosts.get_mut(&(w.edge.host.clone(), w.edge.port)) {
            h.0 = counts::add(h.0, w.calls);
        }
    }
    let mut quieting: Vec<QuietingHost> = hosts
        .into_iter()
        .filter_map(|((host, port), (last, both, last_seen, callers))| {
            let prev = both.saturating_sub(last);
            (prev > 0 && last.saturating_mul(2) < prev).then_some(QuietingHost {
                host,
                port,
                calls_last_7d: last,
                calls_prev_7d: prev,
                last_seen,
                callers: callers.len(),
            })
        })
        .collect();
    quieting.sort_by(|a, b| {
        (b.calls_prev_7d - b.calls_last_7d.min(b.calls_prev_7d))
            .cmp(&(a.calls_prev_7d - a.calls_last_7d.min(a.calls_prev_7d)))
            .then(a.host.cmp(&b.host))
    });
    quieting.truncate(DASHBOARD_ROWS);

    Ok(Json(DashboardResponse {
        now,
        fleet,
        watches,
        migrations,
        quieting_hosts: quieting,
    })
    .into_response())
}
