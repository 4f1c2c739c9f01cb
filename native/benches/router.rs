//! pygw's route trie against matchit (the router behind axum) on the same tables.
//!
//! Not quite like for like: a pygw lookup also normalises the path, resolves the Host, checks
//! the method and returns owned parameters and the path below the prefix, while matchit's `at`
//! matches the path only and borrows its parameters. The gap is the price of those extras.
//!
//! `cargo bench --bench router` (about a minute); `-- --quick` for a smoke run.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pygw_native::router::{Router, RouterBuilder};

const SIZES: [usize; 3] = [10, 1_000, 100_000];

struct Table {
    name: &'static str,
    /// pygw route key paths (without the method).
    routes: Vec<String>,
    /// The same routes in matchit's syntax.
    matchit_routes: Vec<String>,
    hit: String,
    miss: String,
}

fn param_heavy(n: usize) -> Table {
    let routes: Vec<String> = (0..n)
        .map(|i| format!("/{{tenant}}/svc{i}/items/{{id}}"))
        .collect();
    Table {
        name: "params",
        matchit_routes: routes.clone(),
        routes,
        hit: format!("/acme/svc{}/items/12345", n / 2),
        miss: format!("/acme/svc{n}/items/12345"),
    }
}

fn static_heavy(n: usize) -> Table {
    let mut routes = Vec::with_capacity(n);
    let mut matchit_routes = Vec::with_capacity(n);
    for i in 0..n {
        match i % 4 {
            0 => {
                routes.push(format!("/api/v1/svc{i}/items"));
                matchit_routes.push(format!("/api/v1/svc{i}/items"));
            }
            1 => {
                routes.push(format!("/api/v1/svc{i}/items/{{id}}"));
                matchit_routes.push(format!("/api/v1/svc{i}/items/{{id}}"));
            }
            2 => {
                routes.push(format!("/api/v2/svc{i}/orders/recent"));
                matchit_routes.push(format!("/api/v2/svc{i}/orders/recent"));
            }
            _ => {
                routes.push(format!("/files/svc{i}/{{path+}}"));
                matchit_routes.push(format!("/files/svc{i}/{{*path}}"));
            }
        }
    }
    let mid = (n / 2) & !3;
    Table {
        name: "static",
        routes,
        matchit_routes,
        hit: format!("/api/v1/svc{}/items/42", mid + 1),
        miss: format!("/api/v1/svc{}/items/42/extra", mid + 1),
    }
}

fn build_pygw(table: &Table) -> Router {
    let mut b = RouterBuilder::new();
    for (i, path) in table.routes.iter().enumerate() {
        let key = format!("GET {path}");
        if let Err(e) = b.add(None, "", &key, i as u32) {
            panic!("{e}");
        }
    }
    match b.build() {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

fn build_matchit(table: &Table) -> matchit::Router<u32> {
    let mut r = matchit::Router::new();
    for (i, path) in table.matchit_routes.iter().enumerate() {
        if let Err(e) = r.insert(path.as_str(), i as u32) {
            panic!("{path}: {e}");
        }
    }
    r
}

fn lookups(c: &mut Criterion) {
    for make in [param_heavy as fn(usize) -> Table, static_heavy] {
        for n in SIZES {
            let table = make(n);
            let ours = build_pygw(&table);
            let theirs = build_matchit(&table);
            // Both routers must agree before their speed means anything.
            assert!(matches!(ours.lookup("h", "GET", &table.hit), Ok(Some(_))));
            assert!(theirs.at(&table.hit).is_ok());
            assert!(matches!(ours.lookup("h", "GET", &table.miss), Ok(None)));
            assert!(theirs.at(&table.miss).is_err());

            let mut group = c.benchmark_group(format!("router/{}", table.name));
            for (case, path) in [("hit", &table.hit), ("miss", &table.miss)] {
                group.bench_with_input(
                    BenchmarkId::new(format!("pygw/{case}"), n),
                    path,
                    |b, p| b.iter(|| black_box(ours.lookup(black_box("h"), "GET", black_box(p)))),
                );
                group.bench_with_input(
                    BenchmarkId::new(format!("matchit/{case}"), n),
                    path,
                    |b, p| {
                        b.iter(|| {
                            black_box(
                                theirs
                                    .at(black_box(p.as_str()))
                                    .map(|m| (*m.value, m.params.len())),
                            )
                        })
                    },
                );
            }
            group.finish();
        }
    }
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("router/build");
    let table = param_heavy(1_000);
    group.bench_function("pygw/1000", |b| {
        b.iter(|| black_box(build_pygw(&table).len()))
    });
    group.bench_function("matchit/1000", |b| {
        b.iter(|| black_box(build_matchit(&table)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_millis(1500))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(20);
    targets = lookups, build
}
criterion_main!(benches);
