//! Reading and writing the CloudEvents JSON form of a signal, beside serde_json on the same
//! bytes as a `Value`, in the same run.
//!
//! `cargo bench --bench signal`
//!
//! - `parse/signal`: `Signal::from_json_slice` (a full, validated signal; `data` is kept as
//!   text until read).
//! - `parse/signal_and_data`: the same, then `data()` (the data parsed too).
//! - `parse/value`: `serde_json::from_slice::<Value>` of the same bytes: the baseline.
//! - `write/signal`: serializing a signal whose JSON was never computed. A signal caches its
//!   JSON and a clone copies the cache, so each iteration clones a never-serialized signal
//!   outside the timing (and drops it outside the timing too: `iter_batched_ref`).
//! - `write/signal_cached`: `to_json_bytes()` again on a signal already serialized (a
//!   reference-counted `Bytes` clone): what every further HTTP target of the signal pays.
//! - `write/value`: `serde_json::to_vec` of the same JSON as a `Value`: the baseline.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use signal_bus::Signal;

fn sample() -> Signal {
    Signal::builder("order.placed", "/bench/shop")
        .subject("order/1")
        .extension("tenant", "acme")
        .data(serde_json::json!({
            "order_id": 1, "customer": "c-1042", "total_cents": 129_900,
            "currency": "EUR", "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}]
        }))
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let signal = sample();
    let bytes = signal.to_json_bytes();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();

    let mut g = c.benchmark_group("signal/parse");
    g.bench_function("signal", |b| {
        b.iter(|| Signal::from_json_slice(std::hint::black_box(&bytes)).unwrap())
    });
    g.bench_function("signal_and_data", |b| {
        b.iter(|| {
            let s = Signal::from_json_slice(std::hint::black_box(&bytes)).unwrap();
            assert!(s.data().is_some());
            s
        })
    });
    g.bench_function("value", |b| {
        b.iter(|| {
            serde_json::from_slice::<serde_json::Value>(std::hint::black_box(&bytes)).unwrap()
        })
    });
    g.finish();

    // Never serialized, so its clones start without cached JSON; `signal` above is cached.
    let fresh = sample();
    let (one, two) = (fresh.clone().to_json_bytes(), fresh.clone().to_json_bytes());
    assert_ne!(
        one.as_ptr(),
        two.as_ptr(),
        "each clone serializes on its own"
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&one).unwrap()["data"],
        value["data"],
        "the same data as the baseline's"
    );

    let mut g = c.benchmark_group("signal/write");
    g.bench_function("signal", |b| {
        b.iter_batched_ref(
            || fresh.clone(),
            |s| s.to_json_bytes(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("signal_cached", |b| {
        b.iter(|| std::hint::black_box(&signal).to_json_bytes())
    });
    g.bench_function("value", |b| {
        b.iter(|| serde_json::to_vec(std::hint::black_box(&value)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
