//! Ring lookup (trace ID → owner) and build time, for 3, 16 and 100 members.
//!
//! cargo bench -p lb-exporter --bench ring

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lb_exporter::ring::Ring;
use lb_exporter::{Member, MemberSet};
use proto::view::TraceId;

fn members(n: usize) -> MemberSet {
    (0..n)
        .map(|i| Member::parse(&format!("10.0.{}.{}:4317", i / 250, i % 250 + 1)).unwrap())
        .collect()
}

fn ids(n: usize) -> Vec<TraceId> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..n)
        .map(|_| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&next().to_le_bytes());
            id[8..].copy_from_slice(&next().to_le_bytes());
            TraceId(id)
        })
        .collect()
}

fn lookup(c: &mut Criterion) {
    let ids = ids(4096);
    let mut group = c.benchmark_group("ring_route");
    group.throughput(Throughput::Elements(ids.len() as u64));
    for n in [3, 16, 100] {
        let ring = Ring::new(members(n)).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(n), &ring, |b, ring| {
            b.iter(|| {
                let mut acc = 0usize;
                for id in &ids {
                    acc = acc.wrapping_add(ring.route_index(black_box(id)));
                }
                acc
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("ring_route_with_owner_down");
    group.throughput(Throughput::Elements(ids.len() as u64));
    for n in [3, 16, 100] {
        let ring = Ring::new(members(n)).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(n), &ring, |b, ring| {
            b.iter(|| {
                let mut acc = 0usize;
                for id in &ids {
                    acc =
                        acc.wrapping_add(ring.route_where(black_box(id), |m| m != 0).unwrap_or(0));
                }
                acc
            })
        });
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_build");
    group.sample_size(10);
    for n in [3, 16, 100] {
        let set = members(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &set, |b, set| {
            b.iter(|| Ring::new(set.clone()).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, lookup, build);
criterion_main!(benches);
