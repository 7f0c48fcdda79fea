//! The counting hot path under contention: threads × keys, each iteration one request
//! counted the way the proxy does it (key lookup + request + bytes). Run with
//! `cargo bench -p whouses-sidecar --bench counters`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use whouses_sidecar::counters::Counters;
use whouses_wire::Scheme;

fn count_once(c: &Counters, host: &str, now: i64) {
    let e = c.edge(host, 443, Scheme::Https);
    e.record_request(now);
    e.add_bytes_sent(100);
    e.add_bytes_received(100);
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("count_request");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for threads in [1usize, 2, 4] {
        for keys in [1usize, 100, 10_000] {
            g.throughput(Throughput::Elements(threads as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("{threads}threads"), format!("{keys}keys")),
                &(threads, keys),
                |b, &(threads, keys)| {
                    let counters = Arc::new(Counters::new(20_000));
                    let hosts: Arc<Vec<String>> =
                        Arc::new((0..keys).map(|i| format!("host-{i}.internal")).collect());
                    b.iter_custom(|iters| {
                        let start = Instant::now();
                        std::thread::scope(|s| {
                            for t in 0..threads {
                                let (counters, hosts) = (counters.clone(), hosts.clone());
                                s.spawn(move || {
                                    for i in 0..iters as usize {
                                        count_once(&counters, &hosts[(i * 7 + t) % hosts.len()], 1);
                                    }
                                });
                            }
                        });
                        start.elapsed()
                    });
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
