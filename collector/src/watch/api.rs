//! `POST /v1/watches` and `DELETE /v1/watches/{id}` (admin token), `GET /v1/watches`
//! (read token): watches, what fired per caller and kind, and how their notifications
//! fared.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use whouses_wire::decom::{
    AlertKind, DeliveryCounts, NewWatch, Watch, WatchAlert, WatchesResponse,
};
use whouses_wire::{counts, Timestamp};

use super::payload;
use crate::api::{ApiError, AppState};
use crate::auth::{AdminAccess, ReadAccess};
use crate::store::decom::{Baseline, WatchInsert, WatchRow};
use crate::store::{EdgeFilter, StoreError};

/// Longest note on a watch.
const MAX_NOTE: usize = 1_000;
/// Longest host (or target name) a watch names.
const MAX_HOST: usize = 300;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/watches", get(list).post(add))
        .route("/v1/watches/{id}", delete(remove))
}

/// `from`: `now` (the default), an RFC 3339 time, or a duration back from now.
fn parse_from(v: Option<&str>, now: Timestamp) -> Result<Timestamp, ApiError> {
    let v = v.map(str::trim).filter(|v| !v.is_empty()).unwrap_or("now");
    if v == "now" {
        return Ok(now);
    }
    if let Ok(d) = whouses_wire::parse_duration(v) {
        return Ok(now.saturating_sub(d));
    }
    Timestamp::parse_rfc3339(v).map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid field `from`: {v:?} is not `now`, an RFC 3339 time (2026-12-01T00:00:00Z) or a duration back from now (2h)"
        ))
    })
}

fn check_text(field: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.chars().count() > max {
        return Err(ApiError::BadRequest(format!(
            "invalid field `{field}`: longer than {max} characters"
        )));
    }
    if v.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::BadRequest(format!(
            "invalid field `{field}`: control characters"
        )));
    }
    Ok(())
}

async fn add(
    State(s): State<AppState>,
    _: AdminAccess,
    body: Bytes,
) -> Result<(StatusCode, Json<Watch>), ApiError> {
    let w: NewWatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid watch: {e}")))?;
    let host = w.host.trim();
    if host.is_empty() {
        return Err(ApiError::BadRequest(
            "invalid field `host`: empty (a host, host:port, *.suffix or a target name)".into(),
        ));
    }
    check_text("host", host, MAX_HOST)?;
    let patterns = s
        .patterns(host)
        .map_err(|e| ApiError::BadRequest(format!("invalid field `host`: {e}")))?;
    let to = match w.to.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => {
            check_text("to", t, MAX_HOST)?;
            s.patterns(t)
                .map_err(|e| ApiError::BadRequest(format!("invalid field `to`: {e}")))?;
            if t == host {
                return Err(ApiError::BadRequest(
                    "invalid field `to`: the same as `host`".into(),
                ));
            }
            Some(t.to_string())
        }
        None => None,
    };
    let now = s.now();
    let cutoff = parse_from(w.from.as_deref(), now)?;
    let notify = payload::check_notify(&w.notify)
        .map_err(|e| ApiError::BadRequest(format!("invalid field {e}")))?;
    let note = match w.note.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) => {
            check_text("note", n, MAX_NOTE)?;
            Some(n.to_string())
        }
        None => None,
    };
    // Failing calls before the watch began are history, not an alert.
    let edges = s
        .store
        .edges(&EdgeFilter {
            hosts: Some(patterns),
            ..Default::default()
        })
        .await?;
    let mut errors: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in edges {
        let n = errors.entry((e.service, e.environment)).or_default();
        *n = counts::add(*n, e.counts.errors);
    }
    let baselines = errors
        .into_iter()
        .map(|((service, environment), errors)| Baseline {
            service,
            environment,
            errors,
        })
        .collect();
    let row = s
        .store
        .decom()
        .add_watch(
            WatchInsert {
                host: host.to_string(),
                to,
                cutoff,
                notify,
                note,
                created: now,
            },
            baselines,
            s.workflow.watch.max_watches,
        )
        .await
        .map_err(|e| match e {
            StoreError::Invalid(m) => ApiError::Conflict(m),
            other => ApiError::from(other),
        })?;
    tracing::info!(watch = row.id, host = %row.host, cutoff = %row.cutoff,
        notify = row.notify.len(), "Added a watch.");
    Ok((
        StatusCode::CREATED,
        Json(view(&row, Vec::new(), DeliveryCounts::default())),
    ))
}

/// A stored watch as the API shows it.
fn view(w: &WatchRow, alerts: Vec<WatchAlert>, deliveries: DeliveryCounts) -> Watch {
    Watch {
        id: u64::try_from(w.id).unwrap_or(0),
        host: w.host.clone(),
        to: w.to.clone(),
        from: w.cutoff,
        notify: w.notify.iter().map(|u| payload::redact(u)).collect(),
        note: w.note.clone(),
        created_at: w.created,
        alerts,
        deliveries,
    }
}

/// Every watch with what fired (live numbers from this collector's latest evaluation),
/// for `/v1/watches` and the dashboard.
pub async fn watches(s: &AppState) -> Result<Vec<Watch>, ApiError> {
    let store = s.store.decom();
    let rows = store.watches().await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let alerts = store.alerts().await?;
    let stats: BTreeMap<i64, _> = store
        .delivery_stats()
        .await?
        .into_iter()
        .map(|d| (d.watch_id, d))
        .collect();
    let owners = s.workflow.owners.map(s.store.as_ref()).await?;
    Ok(rows
        .iter()
        .map(|w| {
            let live = s.workflow.live.of(w.id).unwrap_or_default();
            let fired: Vec<WatchAlert> = alerts
                .iter()
                .filter(|a| a.watch_id == w.id)
                .filter_map(|a| {
                    let fired_at = a.fired?;
                    let now = live
                        .iter()
                        .find(|c| c.service == a.service && c.environment == a.environment);
                    let (mut calls, mut errors, mut last_seen) = (a.calls, a.errors, a.last_seen);
                    // Failing calls count from the caller's baseline, which the
                    // failing-calls row holds whatever kind this row is.
                    let base = alerts
                        .iter()
                        .find(|b| {
                            b.watch_id == w.id
                                && b.kind == AlertKind::FailingCalls
                                && b.service == a.service
                                && b.environment == a.environment
                        })
                        .map_or(a.base, |b| b.base);
                    if let Some(c) = now {
                        let failing = c.errors_total.saturating_sub(base);
                        errors = errors.max(failing);
                        last_seen = last_seen.max(c.last_seen);
                        calls = match a.kind {
                            AlertKind::TrafficAfterCutoff => calls.max(c.calls_after),
                            AlertKind::FailingCalls => calls.max(failing),
                        };
                    }
                    Some(WatchAlert {
                        kind: a.kind,
                        owner: owners.of(&a.service, &a.environment),
                        service: a.service.clone(),
                        environment: a.environment.clone(),
                        calls,
                        errors,
                        first_seen: a.first_seen,
                        last_seen,
                        fired_at,
                        notified_at: a.notified,
                        notifications: a.notifications,
                    })
                })
                .collect();
            let d = stats.get(&w.id);
            let deliveries = DeliveryCounts {
                pending: d.map_or(0, |d| d.pending),
                delivered: d.map_or(0, |d| d.delivered),
                failed: d.map_or(0, |d| d.failed),
                last_error: d.and_then(|d| d.last_error.clone()),
            };
            view(w, fired, deliveries)
        })
        .collect())
}

async fn list(State(s): State<AppState>, _: ReadAccess) -> Result<Json<WatchesResponse>, ApiError> {
    Ok(Json(WatchesResponse {
        watches: watches(&s).await?,
    }))
}

async fn remove(
    State(s): State<AppState>,
    _: AdminAccess,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: i64 = id.parse().ok().filter(|i| *i > 0).ok_or_else(|| {
        ApiError::BadRequest(format!("invalid watch id {id:?}: a positive number"))
    })?;
    if s.store.decom().remove_watch(id).await? {
        tracing::info!(watch = id, "Removed a watch.");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no watch {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_is_now_a_time_or_a_duration_back() {
        let now = Timestamp(1_795_000_000_000);
        assert_eq!(parse_from(None, now).unwrap(), now);
        assert_eq!(parse_from(Some("now"), now).unwrap(), now);
        assert_eq!(
            parse_from(Some("2h"), now).unwrap(),
            Timestamp(now.0 - 7_200_000)
        );
        assert_eq!(
            parse_from(Some("2026-12-01T00:00:00Z"), now)
                .unwrap()
                .to_string(),
            "2026-12-01T00:00:00Z"
        );
        let e = parse_from(Some("tomorrow"), now).unwrap_err().to_string();
        assert!(e.contains("invalid field `from`"), "{e}");
    }
}
