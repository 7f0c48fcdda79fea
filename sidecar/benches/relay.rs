//! The relay's own work per request, without sockets: parse the request head, route it,
//! write the head to forward; parse the response head, write the app's head; scan a
//! chunked body. What is left of a proxied request's CPU after the kernel's TCP path.
//! Run with `cargo bench -p whouses-sidecar --bench relay`.

use std::time::Duration;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use whouses_sidecar::proxy::body::Body;
use whouses_sidecar::proxy::head::{self, Framing, RequestRewrite, ResponseRewrite};
use whouses_sidecar::proxy::route::{Action, ExplicitProxy, Router};

/// What wrk sends through a forward proxy, and nginx's answer.
const REQUEST: &[u8] =
    b"GET http://127.0.0.1:8080/index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
const CURL: &[u8] = b"GET http://api.internal/v1/grades?id=42 HTTP/1.1\r\nHost: api.internal\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 08:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 100\r\nLast-Modified: Thu, 26 Nov 2026 07:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"1-64\"\r\nAccept-Ranges: bytes\r\n\r\n";

fn request(raw: &[u8], out: &mut Vec<u8>) -> usize {
    let mut storage = head::storage();
    let h = head::parse_request(raw, 65536, &mut storage)
        .ok()
        .flatten()
        .expect("a valid head");
    let route = ExplicitProxy.route(&h).expect("routable");
    let Action::Forward { path, host } = route.action else {
        unreachable!("absolute-form is forwarded")
    };
    let path = &h.target[path];
    out.clear();
    head::write_request(
        out,
        &h,
        &RequestRewrite {
            slash: !path.starts_with('/'),
            target: path,
            host: host.map(|r| &h.target[r]),
        },
    );
    out.len() + route.target.host.len()
}

fn response(raw: &[u8], out: &mut Vec<u8>) -> usize {
    let mut storage = head::storage();
    let h = head::parse_response(raw, 1 << 20, false, &mut storage)
        .ok()
        .flatten()
        .expect("a valid head");
    out.clear();
    head::write_response(
        out,
        &h,
        &ResponseRewrite {
            dechunk: false,
            connection: None,
            upgrade: false,
        },
    );
    out.len()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("relay");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(1024);
    g.bench_function("request_head_wrk", |b| {
        b.iter(|| request(black_box(REQUEST), &mut out))
    });
    g.bench_function("request_head_curl", |b| {
        b.iter(|| request(black_box(CURL), &mut out))
    });
    g.bench_function("response_head_nginx", |b| {
        b.iter(|| response(black_box(RESPONSE), &mut out))
    });
    let chunked: Vec<u8> = {
        let mut v = Vec::new();
        for _ in 0..16 {
            v.extend_from_slice(b"1000\r\n");
            v.extend_from_slice(&[b'x'; 0x1000]);
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b"0\r\n\r\n");
        v
    };
    g.throughput(Throughput::Bytes(chunked.len() as u64));
    g.bench_function("chunked_64k_scan", |b| {
        b.iter(|| {
            let mut body = Body::new(Framing::Chunked, false);
            body.scan(black_box(&chunked), &mut Vec::new())
                .expect("valid")
                .data
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
