//! Report encoding and decoding (with validation), for a heartbeat and for batches of 100
//! and 10,000 edges. Run with `cargo bench -p whouses-wire --bench report`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use whouses_wire::{Counts, Edge, Report, Scheme, Timestamp, REPORT_VERSION};

fn report(edges: usize) -> Report {
    Report {
        version: REPORT_VERSION,
        service: "tis-notification-generator".into(),
        environment: "prod".into(),
        instance: "tis-notification-generator-7d9f8b6c4-x2k9p".into(),
        seq: 1_795_000_000_000_000,
        started_at: Timestamp(1_795_000_000_000),
        period_start: Timestamp(1_795_000_000_000),
        period_end: Timestamp(1_795_000_010_000),
        flush_interval_ms: 10_000,
        edges: (0..edges)
            .map(|i| Edge {
                host: format!("service-{i}.namespace.svc.cluster.local"),
                port: 443,
                scheme: Scheme::Https,
                counts: Counts {
                    requests: 1234 + i as u64,
                    connections: 12,
                    errors: 3,
                    bytes_sent: 123_456,
                    bytes_received: 7_654_321,
                    first_seen: Timestamp(1_795_000_000_500),
                    last_seen: Timestamp(1_795_000_009_000),
                },
            })
            .collect(),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("report");
    for edges in [0usize, 100, 10_000] {
        let r = report(edges);
        let json = serde_json::to_vec(&r).expect("encodes");
        g.throughput(Throughput::Elements(edges.max(1) as u64));
        g.bench_with_input(BenchmarkId::new("encode", edges), &r, |b, r| {
            b.iter(|| serde_json::to_vec(r).expect("encodes"))
        });
        g.bench_with_input(BenchmarkId::new("decode_validate", edges), &json, |b, j| {
            b.iter(|| Report::from_json(j).expect("valid"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
