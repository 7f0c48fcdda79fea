//! Forwarding an absolute-form HTTP request upstream (the app connection's keep-alive
//! upstream connection, [`super::upstream`]), with hop-by-hop headers removed both ways
//! (RFC 9110 §7.6.1). Bodies stream through.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};
use hyper::body::Incoming;

use super::body::CountingBody;
use super::error::ProxyError;
use super::target::Target;
use super::upstream::Affinity;

/// Headers that describe one hop, never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Remove hop-by-hop headers, including any named by `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    // Framing is re-done by hyper on each hop.
    headers.remove(header::TRANSFER_ENCODING);
}

pub async fn send(
    upstream: &Affinity,
    mut req: Request<CountingBody<Incoming>>,
    target: &Target,
) -> Result<Response<Incoming>, ProxyError> {
    strip_hop_by_hop(req.headers_mut());
    // The client already got its `100 Continue` from our server side when we started
    // reading its body; the upstream sees a plain request.
    req.headers_mut().remove(header::EXPECT);
    *req.version_mut() = Version::HTTP_11;
    // Absolute-form to origin-form (RFC 9112 §3.2.1): the authority goes to `Host` if the
    // app did not send one.
    let authority = req.uri().authority().cloned();
    if !req.headers().contains_key(header::HOST) {
        if let Some(a) = &authority {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
    }
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
    let mut resp = upstream
        .send((target.host.clone(), target.port), req)
        .await?;
    strip_hop_by_hop(resp.headers_mut());
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-kept", "content-length"]);
    }
}
