//! **Where a query is answered**: callers, callees, hosts and services, computed from the
//! store's edge and instance rows. Each query is: parameters → the store's rows → a pure
//! function → the response type of [`whouses_wire::api`].

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use whouses_wire::api::{
    Callee, CalleesResponse, Caller, CallersResponse, CoverageResponse, EdgeRow, HostSummary,
    HostsResponse, ServiceSummary, ServicesResponse,
};
use whouses_wire::{counts, Timestamp, OTHER_HOST};

use crate::reconcile;
use crate::store::{EdgeFilter, InboundFilter, InboundRow, Store, StoreError};
use crate::targets::HostPattern;

/// Group edges by calling service: the rows of `/v1/callers`, busiest first.
pub fn callers_of(edges: &[EdgeRow]) -> Vec<Caller> {
    // Each caller's place in `v`: the rows themselves are large, so they are moved once
    // (a map of them, or sorting them, would move each again and again: a host with a
    // thousand callers spent most of `check`'s own time there).
    let mut at: HashMap<(&str, &str), usize> = HashMap::with_capacity(edges.len());
    let mut v: Vec<Caller> = Vec::new();
    for e in edges {
        let c = match at.entry((&e.service, &e.environment)) {
            Entry::Vacant(slot) => {
                slot.insert(v.len());
                v.push(Caller {
                    service: e.service.clone(),
                    environment: e.environment.clone(),
                    counts: e.counts,
                    hosts: Vec::new(),
                    owner: None,
                    ..Caller::default()
                });
                v.last_mut()
            }
            Entry::Occupied(i) => {
                let c = v.get_mut(*i.get());
                if let Some(c) = c {
                    c.counts.merge(&e.counts);
                    Some(c)
                } else {
                    None
                }
            }
        };
        if let Some(c) = c {
            let name = edge_name(e);
            if !c.hosts.contains(&name) {
                c.hosts.push(name);
            }
        }
    }
    for c in &mut v {
        c.hosts.sort();
    }
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&v[a], &v[b]);
        b.counts
            .calls()
            .cmp(&a.counts.calls())
            .then(a.service.cmp(&b.service))
            .then(a.environment.cmp(&b.environment))
    });
    let mut slots: Vec<Option<Caller>> = v.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|i| slots.get_mut(i).and_then(Option::take))
        .collect()
}

/// How an edge's upstream is named in `callers` and `check`: `host:port`; for an edge
/// counted from OpenTelemetry service-graph metrics, `otel://server` (`otel://host:port`
/// when the server named a port), so the source shows in every answer.
pub fn edge_name(e: &EdgeRow) -> String {
    match (e.scheme, e.port) {
        (whouses_wire::Scheme::Otel, 0) => format!("otel://{}", e.host),
        (whouses_wire::Scheme::Otel, p) => format!("otel://{}", host_port(&e.host, p)),
        _ => host_port(&e.host, e.port),
    }
}

/// `host:port`, with brackets around an IPv6 literal.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub async fn callers(
    store: &dyn Store,
    host_query: &str,
    patterns: Vec<HostPattern>,
    since: Option<Timestamp>,
    environment: Option<String>,
) -> Result<CallersResponse, StoreError> {
    let edges = store
        .edges(&EdgeFilter {
            hosts: Some(patterns.clone()),
            environment: environment.clone(),
            since,
            ..Default::default()
        })
        .await?;
    // Issue 14: what the callee's inbound sidecars saw, attributed through the address
    // book, merged in.
    let (rows, attributions) = inbound_attributed(
        store,
        &InboundFilter {
            hosts: Some(patterns),
            since,
        },
    )
    .await?;
    let merged = reconcile::merge(
        callers_of(&edges),
        &rows,
        &attributions,
        environment.as_deref(),
    );
    Ok(CallersResponse {
        host: host_query.to_string(),
        since,
        callers: merged.callers,
        unattributed: merged.unattributed,
    })
}

/// Inbound rows matching `f` and who made each (the address book's claims for their
/// addresses).
pub async fn inbound_attributed(
    store: &dyn Store,
    f: &InboundFilter,
) -> Result<(Vec<InboundRow>, Vec<reconcile::Attribution>), StoreError> {
    let rows = store.inbound(f).await?;
    if rows.is_empty() {
        return Ok((rows, Vec::new()));
    }
    let mut addresses: Vec<String> = rows.iter().map(|r| r.address.clone()).collect();
    addresses.sort();
    addresses.dedup();
    let claims = store.address_claims(&addresses).await?;
    let attributions = reconcile::attribute(&rows, &claims);
    Ok((rows, attributions))
}

/// `/v1/coverage`: every host with a callee-side sidecar, and how much of what it saw
/// since `since` is attributed to known callers.
pub async fn coverage(
    store: &dyn Store,
    since: Option<Timestamp>,
) -> Result<CoverageResponse, StoreError> {
    let callees = store.callee_instances().await?;
    let (rows, attributions) =
        inbound_attributed(store, &InboundFilter { hosts: None, since }).await?;
    Ok(CoverageResponse {
        since,
        hosts: reconcile::coverage(&callees, &rows, &attributions),
    })
}

pub async fn callees(
    store: &dyn Store,
    service: &str,
    since: Option<Timestamp>,
    environment: Option<String>,
) -> Result<CalleesResponse, StoreError> {
    let edges = store
        .edges(&EdgeFilter {
            service: Some(service.to_string()),
            environment,
            since,
            ..Default::default()
        })
        .await?;
    let mut callees: Vec<Callee> = edges
        .into_iter()
        .map(|e| Callee {
            host: e.host,
            port: e.port,
            scheme: e.scheme,
            environment: e.environment,
            counts: e.counts,
        })
        .collect();
    callees.sort_by(|a, b| {
        b.counts
            .calls()
            .cmp(&a.counts.calls())
            .then(a.host.cmp(&b.host))
    });
    Ok(CalleesResponse {
        service: service.to_string(),
        since,
        callees,
    })
}

/// Every upstream in `edges`, one row per `host:port`; with `unused_since`, only those
/// quiet since then. Quietest first. The `(other)` buckets are not hosts.
pub fn host_summaries(
    edges: &[EdgeRow],
    unused_since: Option<Timestamp>,
    now: Timestamp,
) -> Vec<HostSummary> {
    type Callers<'a> = Vec<(&'a str, &'a str)>;
    let mut by: BTreeMap<(&str, u16), (HostSummary, Callers)> = BTreeMap::new();
    for e in edges.iter().filter(|e| e.host != OTHER_HOST) {
        let (h, callers) = by.entry((&e.host, e.port)).or_insert_with(|| {
            (
                HostSummary {
                    host: e.host.clone(),
                    port: e.port,
                    schemes: Vec::new(),
                    callers: 0,
                    requests: 0,
                    connections: 0,
                    errors: 0,
                    first_seen: e.counts.first_seen,
                    last_seen: e.counts.last_seen,
                    quiet_for_ms: 0,
                },
                Vec::new(),
            )
        });
        h.requests = counts::add(h.requests, e.counts.requests);
        h.connections = counts::add(h.connections, e.counts.connections);
        h.errors = counts::add(h.errors, e.counts.errors);
        h.first_seen = h.first_seen.min(e.counts.first_seen);
        h.last_seen = h.last_seen.max(e.counts.last_seen);
        if !h.schemes.contains(&e.scheme) {
            h.schemes.push(e.scheme);
        }
        let who = (e.service.as_str(), e.environment.as_str());
        if !callers.contains(&who) {
            callers.push(who);
        }
    }
    let mut hosts: Vec<HostSummary> = by
        .into_values()
        .map(|(mut h, callers)| {
            h.callers = callers.len();
            h.quiet_for_ms = now.0.saturating_sub(h.last_seen.0).max(0);
            h.schemes.sort();
            h
        })
        .filter(|h| unused_since.is_none_or(|t| h.last_seen < t))
        .collect();
    hosts.sort_by(|a, b| {
        a.last_seen
            .cmp(&b.last_seen)
            .then(a.host.cmp(&b.host))
            .then(a.port.cmp(&b.port))
    });
    hosts
}

pub async fn hosts(
    store: &dyn Store,
    unused_since: Option<Timestamp>,
    now: Timestamp,
) -> Result<HostsResponse, StoreError> {
    let edges = store.edges(&EdgeFilter::default()).await?;
    Ok(HostsResponse {
        unused_since,
        hosts: host_summaries(&edges, unused_since, now),
    })
}

pub async fn services(store: &dyn Store) -> Result<ServicesResponse, StoreError> {
    let mut by: BTreeMap<(String, String), ServiceSummary> = BTreeMap::new();
    for i in store.instances().await? {
        let s = by
            .entry((i.service.clone(), i.environment.clone()))
            .or_insert_with(|| ServiceSummary {
                service: i.service.clone(),
                environment: i.environment.clone(),
                first_report: i.first_report,
                last_report: i.last_report,
                instances: Vec::new(),
            });
        s.first_report = s.first_report.min(i.first_report);
        s.last_report = s.last_report.max(i.last_report);
        s.instances.push(i);
    }
    Ok(ServicesResponse {
        services: by.into_values().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use whouses_wire::{Counts, Scheme, MAX_COUNT};

    fn edge(service: &str, host: &str, requests: u64) -> EdgeRow {
        EdgeRow {
            service: service.into(),
            environment: "prod".into(),
            host: host.into(),
            port: 80,
            scheme: Scheme::Http,
            counts: Counts {
                requests,
                first_seen: Timestamp(10),
                last_seen: Timestamp(20),
                ..Counts::default()
            },
        }
    }

    #[test]
    fn callers_sum_per_service_and_saturate() {
        let rows = [
            edge("a", "x", MAX_COUNT),
            edge("a", "y", MAX_COUNT),
            edge("b", "x", 3),
        ];
        let c = callers_of(&rows);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].service, "a");
        assert_eq!(c[0].counts.requests, MAX_COUNT);
        assert_eq!(c[0].hosts, vec!["x:80", "y:80"]);
        assert_eq!(c[1].counts.requests, 3);
    }

    #[test]
    fn callers_come_busiest_first_then_by_name_each_once() {
        let mut staging = edge("m", "x", 5);
        staging.environment = "staging".into();
        let mut other_port = edge("z", "x", 2);
        other_port.port = 8080;
        // Rows arrive in the store's order (by host, then service), not by calls.
        let rows = [
            edge("z", "y", 1),
            edge("b", "x", 7),
            staging,
            edge("m", "x", 5),
            edge("a", "x", 7),
            other_port,
            edge("z", "x", 2),
            edge("z", "x", 1),
        ];
        let callers = callers_of(&rows);
        let got: Vec<(&str, &str, u64, Vec<String>)> = callers
            .iter()
            .map(|c| {
                (
                    c.service.as_str(),
                    c.environment.as_str(),
                    c.counts.requests,
                    c.hosts.clone(),
                )
            })
            .collect();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                ("a", "prod", 7, names(&["x:80"])),
                ("b", "prod", 7, names(&["x:80"])),
                ("z", "prod", 6, names(&["x:80", "x:8080", "y:80"])),
                ("m", "prod", 5, names(&["x:80"])),
                ("m", "staging", 5, names(&["x:80"])),
            ]
        );
    }

    #[test]
    fn host_summaries_skip_the_other_bucket_and_saturate() {
        let mut other = edge("a", OTHER_HOST, 5);
        other.port = 0;
        let rows = [edge("a", "x", MAX_COUNT), edge("b", "x", MAX_COUNT), other];
        let h = host_summaries(&rows, None, Timestamp(100));
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].callers, 2);
        assert_eq!(h[0].requests, MAX_COUNT);
        assert_eq!(h[0].quiet_for_ms, 80);
    }
}
