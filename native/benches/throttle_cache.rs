//! Token buckets against governor's direct rate limiter, and the response cache against lru and
//! quick_cache (unsync), each on the same workload. Measurement times are short so the whole file
//! runs in about a minute; run with `cargo bench --bench throttle_cache`.

use std::hint::black_box;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use governor::{Quota, RateLimiter};
use pygw_native::cache::Cache;
use pygw_native::throttle::{monotonic_now, unix_now, QuotaPeriod, Throttle};

const ENTRIES: usize = 10_000;

fn keys(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:08}")).collect()
}

fn throttle(c: &mut Criterion) {
    let mut g = c.benchmark_group("throttle");
    // Rates high enough that every call is granted: both sides do their full bookkeeping.
    let rate = NonZeroU32::MAX;

    let gov = RateLimiter::direct(Quota::per_second(rate).allow_burst(rate));
    g.bench_function("governor_check", |b| {
        b.iter(|| black_box(gov.check().is_ok()))
    });

    let t = Throttle::new();
    let bucket = t.add_bucket(f64::from(u32::MAX), u32::MAX).unwrap_or(0);
    let wall = unix_now();
    // Like governor, read the clock on every call.
    g.bench_function("pygw_acquire_1_bucket", |b| {
        b.iter(|| black_box(t.acquire(black_box(&[bucket]), None, monotonic_now(), wall)))
    });

    // The same without the clock read: the cost of the decision itself.
    let mut now = 0.0;
    g.bench_function("pygw_acquire_1_bucket_fixed_clock", |b| {
        b.iter(|| {
            now += 1e-9;
            black_box(t.acquire(black_box(&[bucket]), None, now, wall))
        })
    });

    let ids = [
        bucket,
        t.add_bucket(1e12, u32::MAX).unwrap_or(0),
        t.add_bucket(1e12, u32::MAX).unwrap_or(0),
    ];
    let quota = t.add_quota(u64::MAX, QuotaPeriod::Day);
    g.bench_function("pygw_acquire_3_buckets_quota", |b| {
        b.iter(|| black_box(t.acquire(black_box(&ids), Some(quota), monotonic_now(), wall)))
    });
    g.finish();
}

fn cache(c: &mut Criterion) {
    let present = keys(ENTRIES, "/present/");
    let absent = keys(ENTRIES, "/absent/");
    // Each entry costs its 17-byte key plus 0 value bytes, so the byte bound holds exactly ENTRIES.
    let capacity_bytes = ENTRIES * present[0].len();
    let cap = NonZeroUsize::new(ENTRIES).unwrap_or(NonZeroUsize::MIN);

    let mut ours: Cache<u64> = Cache::new(capacity_bytes);
    let mut lru_c: lru::LruCache<String, u64> = lru::LruCache::new(cap);
    let mut qc: quick_cache::unsync::Cache<String, u64> = quick_cache::unsync::Cache::new(ENTRIES);
    for (i, k) in present.iter().enumerate() {
        ours.insert(k, i as u64, 0, 1e9, 0.0);
        lru_c.put(k.clone(), i as u64);
        qc.insert(k.clone(), i as u64);
    }

    let mut g = c.benchmark_group("cache_get_hit");
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("pygw", ENTRIES), |b| {
        b.iter(|| {
            i = (i + 7919) % ENTRIES;
            black_box(ours.get(&present[i], 1.0).copied())
        })
    });
    g.bench_function(BenchmarkId::new("lru", ENTRIES), |b| {
        b.iter(|| {
            i = (i + 7919) % ENTRIES;
            black_box(lru_c.get(present[i].as_str()).copied())
        })
    });
    g.bench_function(BenchmarkId::new("quick_cache", ENTRIES), |b| {
        b.iter(|| {
            i = (i + 7919) % ENTRIES;
            black_box(qc.get(present[i].as_str()).copied())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("cache_get_miss");
    g.bench_function(BenchmarkId::new("pygw", ENTRIES), |b| {
        b.iter(|| {
            i = (i + 7919) % ENTRIES;
            black_box(ours.get(&absent[i], 1.0).copied())
        })
    });
    g.bench_function(BenchmarkId::new("lru", ENTRIES), |b| {
        b.iter(|| {
            i = (i + 7919) % ENTRIES;
            black_box(lru_c.get(absent[i].as_str()).copied())
        })
    });
    g.bench_function(BenchmarkId::new("quick_cache", ENTRIES), |b| {
        b.iter(|| {
            i = (i + 7919) % ENTRIES;
            black_box(qc.get(absent[i].as_str()).copied())
        })
    });
    g.finish();

    // Inserting keys the full cache does not hold: every insert evicts one entry. All three take
    // an owned or borrowed key as their API wants, allocation included.
    let fresh = keys(4 * ENTRIES, "/fresh/00");
    let mut g = c.benchmark_group("cache_insert_evict");
    let mut j = 0usize;
    g.bench_function(BenchmarkId::new("pygw", ENTRIES), |b| {
        b.iter(|| {
            j = (j + 1) % fresh.len();
            black_box(ours.insert(&fresh[j], j as u64, 0, 1e9, 0.0))
        })
    });
    g.bench_function(BenchmarkId::new("lru", ENTRIES), |b| {
        b.iter(|| {
            j = (j + 1) % fresh.len();
            black_box(lru_c.put(fresh[j].clone(), j as u64))
        })
    });
    g.bench_function(BenchmarkId::new("quick_cache", ENTRIES), |b| {
        b.iter(|| {
            j = (j + 1) % fresh.len();
            qc.insert(fresh[j].clone(), j as u64);
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = throttle, cache
}
criterion_main!(benches);
