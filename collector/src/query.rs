//! **Where a query is answered**: callers, callees, hosts and services, computed from the
//! store's edge and instance rows. The response shapes are the public API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use whouses_wire::Timestamp;

use crate::store::{EdgeFilter, EdgeRow, InstanceRow, Store, StoreError};
use crate::targets::HostPattern;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub service: String,
    pub environment: String,
    pub requests: u64,
    pub connections: u64,
    pub errors: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// The `host:port` names this caller used.
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallersResponse {
    pub host: String,
    pub since: Option<Timestamp>,
    pub callers: Vec<Caller>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callee {
    pub host: String,
    pub port: u16,
    pub scheme: String,
    pub environment: String,
    pub requests: u64,
    pub connections: u64,
    pub errors: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalleesResponse {
    pub service: String,
    pub since: Option<Timestamp>,
    pub callees: Vec<Callee>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSummary {
    pub host: String,
    pub port: u16,
    pub schemes: Vec<String>,
    pub callers: usize,
    pub requests: u64,
    pub errors: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Milliseconds since the last call (at the time of the answer).
    pub quiet_for_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostsResponse {
    pub unused_since: Option<Timestamp>,
    pub hosts: Vec<HostSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub service: String,
    pub environment: String,
    pub first_report: Timestamp,
    pub last_report: Timestamp,
    pub instances: Vec<InstanceRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServicesResponse {
    pub services: Vec<ServiceSummary>,
}

fn add(a: &mut Caller, e: &EdgeRow) {
    a.requests += e.requests;
    a.connections += e.connections;
    a.errors += e.errors;
    a.bytes_sent += e.bytes_sent;
    a.bytes_received += e.bytes_received;
    a.first_seen = a.first_seen.min(e.first_seen);
    a.last_seen = a.last_seen.max(e.last_seen);
}

/// Group edges by calling service: the rows of `/v1/callers`, busiest first.
pub fn callers_of(edges: &[EdgeRow]) -> Vec<Caller> {
    let mut by: BTreeMap<(String, String), Caller> = BTreeMap::new();
    for e in edges {
        let c = by
            .entry((e.service.clone(), e.environment.clone()))
            .or_insert_with(|| Caller {
                service: e.service.clone(),
                environment: e.environment.clone(),
                requests: 0,
                connections: 0,
                errors: 0,
                bytes_sent: 0,
                bytes_received: 0,
                first_seen: e.first_seen,
                last_seen: e.last_seen,
                hosts: Vec::new(),
            });
        add(c, e);
        let name = format!("{}:{}", e.host, e.port);
        if !c.hosts.contains(&name) {
            c.hosts.push(name);
        }
    }
    let mut v: Vec<Caller> = by.into_values().collect();
    for c in &mut v {
        c.hosts.sort();
    }
    v.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.service.cmp(&b.service)));
    v
}

pub async fn callers(
    store: &Store,
    host_query: &str,
    patterns: Vec<HostPattern>,
    since: Option<Timestamp>,
    environment: Option<String>,
) -> Result<CallersResponse, StoreError> {
    let edges = store
        .edges(&EdgeFilter {
            hosts: Some(patterns),
            environment,
            since,
            ..Default::default()
        })
        .await?;
    Ok(CallersResponse {
        host: host_query.to_string(),
        since,
        callers: callers_of(&edges),
    })
}

pub async fn callees(
    store: &Store,
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
            requests: e.requests,
            connections: e.connections,
            errors: e.errors,
            bytes_sent: e.bytes_sent,
            bytes_received: e.bytes_received,
            first_seen: e.first_seen,
            last_seen: e.last_seen,
        })
        .collect();
    callees.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.host.cmp(&b.host)));
    Ok(CalleesResponse {
        service: service.to_string(),
        since,
        callees,
    })
}

/// Every upstream seen; with `unused_since`, only those quiet since then. Quietest first.
pub async fn hosts(
    store: &Store,
    unused_since: Option<Timestamp>,
    now: Timestamp,
) -> Result<HostsResponse, StoreError> {
    let edges = store.edges(&EdgeFilter::default()).await?;
    type Callers = Vec<(String, String)>;
    let mut by: BTreeMap<(String, u16), (HostSummary, Callers)> = BTreeMap::new();
    for e in &edges {
        let (h, callers) = by.entry((e.host.clone(), e.port)).or_insert_with(|| {
            (
                HostSummary {
                    host: e.host.clone(),
                    port: e.port,
                    schemes: Vec::new(),
                    callers: 0,
                    requests: 0,
                    errors: 0,
                    first_seen: e.first_seen,
                    last_seen: e.last_seen,
                    quiet_for_ms: 0,
                },
                Vec::new(),
            )
        });
        h.requests += e.requests;
        h.errors += e.errors;
        h.first_seen = h.first_seen.min(e.first_seen);
        h.last_seen = h.last_seen.max(e.last_seen);
        if !h.schemes.contains(&e.scheme) {
            h.schemes.push(e.scheme.clone());
        }
        let who = (e.service.clone(), e.environment.clone());
        if !callers.contains(&who) {
            callers.push(who);
        }
    }
    let mut hosts: Vec<HostSummary> = by
        .into_values()
        .map(|(mut h, callers)| {
            h.callers = callers.len();
            h.quiet_for_ms = (now.0 - h.last_seen.0).max(0);
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
    Ok(HostsResponse {
        unused_since,
        hosts,
    })
}

pub async fn services(store: &Store) -> Result<ServicesResponse, StoreError> {
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
