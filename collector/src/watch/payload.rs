//! What a notification says, and where it may go.
//!
//! * To an Alertmanager `…/api/v2/alerts` endpoint: a one-element array of
//!   `PostableAlert` — labels `alertname`, `kind` (`traffic-after-cutoff` |
//!   `failing-calls`), `watch`, `host`, `service`, `environment` (and `team` when the
//!   owner is known), annotations with the one-line `summary`, the owner, the counts and
//!   times; `startsAt` when it first fired, `endsAt` one `--renotify-after` later (a
//!   re-notification extends it; silence lets Alertmanager resolve it).
//! * Anywhere else: a JSON object whose `text` is one line (what Slack's incoming
//!   webhooks show), with the same facts as fields beside it.
//!
//! Notify URLs are checked when a watch is added (http or https, a host, no fragment, at
//! most [`MAX_NOTIFY`] of at most [`MAX_URL_LEN`] characters) and shown redacted (a
//! Slack webhook's path is its secret).

use serde_json::{json, Value};
use whouses_wire::decom::{AlertKind, Owner};
use whouses_wire::Timestamp;

use crate::store::decom::{AlertUpdate, WatchRow};

/// Most notify URLs per watch.
pub const MAX_NOTIFY: usize = 8;
/// Longest notify URL.
pub const MAX_URL_LEN: usize = 2048;

/// Check and normalise a watch's notify URLs; the error names the bad one
/// (`notify[1]`).
pub fn check_notify(urls: &[String]) -> Result<Vec<String>, String> {
    if urls.len() > MAX_NOTIFY {
        return Err(format!(
            "notify: {} URLs, at most {MAX_NOTIFY} per watch",
            urls.len()
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(urls.len());
    for (i, raw) in urls.iter().enumerate() {
        let at = format!("notify[{i}]");
        let s = raw.trim();
        if s.is_empty() {
            return Err(format!("{at}: empty URL"));
        }
        if s.len() > MAX_URL_LEN {
            return Err(format!("{at}: longer than {MAX_URL_LEN} characters"));
        }
        let u = url::Url::parse(s).map_err(|e| format!("{at} {}: {e}", redact(s)))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(format!(
                "{at} {}: use an http:// or https:// URL",
                redact(s)
            ));
        }
        if u.host_str().is_none_or(str::is_empty) {
            return Err(format!("{at} {}: no host", redact(s)));
        }
        if u.fragment().is_some() {
            return Err(format!("{at} {}: remove the #fragment", redact(s)));
        }
        let s = u.to_string();
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// Whether a URL is an Alertmanager v2 alerts endpoint.
pub fn is_alertmanager(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.path().trim_end_matches('/').ends_with("/api/v2/alerts"))
}

/// A URL as shown in answers and logs: without credentials; an Alertmanager endpoint
/// with its path, any other URL without path and query (`https://hooks.slack.com/…`).
pub fn redact(url: &str) -> String {
    let Ok(u) = url::Url::parse(url) else {
        return "(not a URL)".to_string();
    };
    let host = match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    };
    let base = format!("{}://{host}", u.scheme());
    if is_alertmanager(url) {
        format!("{base}{}", u.path())
    } else if u.path().len() > 1 || u.query().is_some() {
        format!("{base}/…")
    } else {
        format!("{base}/")
    }
}

/// Everything a notification says.
#[derive(Debug, Clone, Copy)]
pub struct Notice<'a> {
    pub watch: &'a WatchRow,
    pub alert: &'a AlertUpdate,
    pub owner: Option<&'a Owner>,
    /// Until when Alertmanager should hold the alert active.
    pub ends_at: Timestamp,
    /// The host's page on this collector (`--public-url`).
    pub link: Option<&'a str>,
}

/// The one line a person reads.
pub fn text(n: &Notice<'_>) -> String {
    let a = n.alert;
    let who = match n.owner {
        Some(o) => format!("{} ({}; owner: {})", a.service, a.environment, o.describe()),
        None => format!("{} ({})", a.service, a.environment),
    };
    let what = match a.kind {
        AlertKind::TrafficAfterCutoff => format!(
            "still calls {} after its cutoff ({}): {} call(s) from {} to {}",
            n.watch.host, n.watch.cutoff, a.calls, a.first_seen, a.last_seen
        ),
        AlertKind::FailingCalls => format!(
            "fails calling {}: {} failing call(s) since the watch began, last call {}",
            n.watch.host, a.errors, a.last_seen
        ),
    };
    let note = n
        .watch
        .note
        .as_deref()
        .map(|t| format!(": {t}"))
        .unwrap_or_default();
    let line = format!("whouses: {who} {what} — watch {}{note}", n.watch.id);
    // One line, whatever a note held.
    line.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn alertname(k: AlertKind) -> &'static str {
    match k {
        AlertKind::TrafficAfterCutoff => "WhousesTrafficAfterCutoff",
        AlertKind::FailingCalls => "WhousesFailingCalls",
    }
}

/// The JSON body for `url`.
pub fn body(url: &str, n: &Notice<'_>) -> Value {
    let a = n.alert;
    if is_alertmanager(url) {
        let mut labels = json!({
            "alertname": alertname(a.kind),
            "kind": a.kind.as_str(),
            "watch": n.watch.id.to_string(),
            "host": n.watch.host,
            "service": a.service,
            "environment": a.environment,
        });
        if let Some(o) = n.owner {
            labels["team"] = json!(o.team);
        }
        let mut annotations = json!({
            "summary": text(n),
            "calls": a.calls.to_string(),
            "failing_calls": a.errors.to_string(),
            "first_seen": a.first_seen.to_string(),
            "last_seen": a.last_seen.to_string(),
            "cutoff": n.watch.cutoff.to_string(),
        });
        if let Some(o) = n.owner {
            annotations["owner"] = json!(o.describe());
        }
        if let Some(note) = &n.watch.note {
            annotations["note"] = json!(note);
        }
        let mut alert = json!({
            "labels": labels,
            "annotations": annotations,
            "startsAt": a.fired.unwrap_or(a.first_seen).to_string(),
            "endsAt": n.ends_at.to_string(),
        });
        if let Some(link) = n.link {
            alert["generatorURL"] = json!(link);
        }
        json!([alert])
    } else {
        json!({
            "text": text(n),
            "kind": a.kind.as_str(),
            "watch": n.watch.id,
            "host": n.watch.host,
            "cutoff": n.watch.cutoff,
            "service": a.service,
            "environment": a.environment,
            "owner": n.owner,
            "calls": a.calls,
            "failing_calls": a.errors,
            "first_seen": a.first_seen,
            "last_seen": a.last_seen,
            "note": n.watch.note,
            "notification": a.notifications,
            "url": n.link,
        })
    }
}

/// The host's page on the collector, for links in alerts.
pub fn link(public_url: Option<&url::Url>, host: &str) -> Option<String> {
    let mut u = public_url?.clone();
    u.set_query(None);
    u.query_pairs_mut().append_pair("host", host);
    Some(u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use whouses_wire::decom::OwnerSource;

    fn watch() -> WatchRow {
        WatchRow {
            id: 3,
            host: "old.internal".into(),
            to: None,
            cutoff: Timestamp(1_795_000_000_000),
            notify: vec![],
            note: Some("switch-off\nFriday".into()),
            created: Timestamp(1_794_000_000_000),
        }
    }

    fn alert(kind: AlertKind) -> AlertUpdate {
        AlertUpdate {
            watch_id: 3,
            kind,
            service: "billing".into(),
            environment: "prod".into(),
            base: 0,
            fired: Some(Timestamp(1_795_000_100_000)),
            notified: Some(Timestamp(1_795_000_100_000)),
            mark: 0,
            calls: 42,
            errors: 7,
            first_seen: Timestamp(1_795_000_001_000),
            last_seen: Timestamp(1_795_000_090_000),
            notifications: 1,
        }
    }

    #[test]
    fn notify_urls_are_checked_with_the_bad_one_named() {
        let ok = check_notify(&[
            "http://127.0.0.1:9093/api/v2/alerts".into(),
            "https://hooks.slack.com/services/T/B/x".into(),
        ])
        .unwrap();
        assert_eq!(ok.len(), 2);
        for (bad, needle) in [
            ("ftp://x/y", "notify[1] ftp://x/…: use an http"),
            ("not a url", "notify[1]"),
            ("http://x/#frag", "remove the #fragment"),
            ("", "notify[1]: empty"),
        ] {
            let e = check_notify(&["http://ok.example/".into(), bad.into()]).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let many: Vec<String> = (0..9).map(|i| format!("http://h{i}.example/")).collect();
        assert!(check_notify(&many).unwrap_err().contains("at most 8"));
    }

    #[test]
    fn urls_are_shown_without_their_secrets() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact("http://user:pw@am.internal:9093/api/v2/alerts"),
            "http://am.internal:9093/api/v2/alerts"
        );
        assert!(is_alertmanager("http://am:9093/api/v2/alerts/"));
        assert!(!is_alertmanager("http://am:9093/api/v1/alerts"));
    }

    #[test]
    fn alertmanager_gets_a_postable_alert() {
        let owner = Owner {
            team: "payments".into(),
            contact: Some("#pay".into()),
            source: OwnerSource::OwnersFile,
        };
        let a = alert(AlertKind::TrafficAfterCutoff);
        let n = Notice {
            watch: &watch(),
            alert: &a,
            owner: Some(&owner),
            ends_at: Timestamp(1_795_014_500_000),
            link: Some("https://whouses.internal/?host=old.internal"),
        };
        let v = body("http://am:9093/api/v2/alerts", &n);
        let alert = &v[0];
        assert_eq!(alert["labels"]["kind"], "traffic-after-cutoff");
        assert_eq!(alert["labels"]["service"], "billing");
        assert_eq!(alert["labels"]["watch"], "3");
        assert_eq!(alert["labels"]["team"], "payments");
        assert_eq!(alert["annotations"]["calls"], "42");
        assert_eq!(alert["startsAt"], "2026-11-18T11:08:20Z");
        assert_eq!(
            alert["generatorURL"],
            "https://whouses.internal/?host=old.internal"
        );
        let summary = alert["annotations"]["summary"].as_str().unwrap();
        assert!(
            summary.starts_with("whouses: billing (prod; owner: payments (#pay)) still calls old.internal after its cutoff"),
            "{summary}"
        );
        assert!(!summary.contains('\n'), "one line: {summary}");
    }

    #[test]
    fn anything_else_gets_a_one_line_text() {
        let a = alert(AlertKind::FailingCalls);
        let n = Notice {
            watch: &watch(),
            alert: &a,
            owner: None,
            ends_at: Timestamp(0),
            link: None,
        };
        let v = body("https://hooks.slack.com/services/T/B/x", &n);
        let t = v["text"].as_str().unwrap();
        assert!(
            t.contains("billing (prod) fails calling old.internal: 7 failing call(s)"),
            "{t}"
        );
        assert!(t.ends_with("watch 3: switch-off Friday"), "{t}");
        assert_eq!(v["kind"], "failing-calls");
        assert_eq!(v["failing_calls"], 7);
    }

    #[test]
    fn links_point_at_the_host_page() {
        let u = url::Url::parse("https://whouses.internal/base/").unwrap();
        assert_eq!(
            link(Some(&u), "old.internal:443").unwrap(),
            "https://whouses.internal/base/?host=old.internal%3A443"
        );
        assert!(link(None, "x").is_none());
    }
}
