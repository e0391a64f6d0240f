#![cfg(feature = "metrics")]
//! The `metrics` feature: a snapshot pushed through the `metrics` facade, checked with a
//! recording recorder.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use signal_bus::{adapter::Noop, Bus, Signal};

type Values = Arc<Mutex<BTreeMap<String, f64>>>;

struct Slot(String, Values);

impl CounterFn for Slot {
    fn increment(&self, value: u64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() += value as f64;
    }
    fn absolute(&self, value: u64) {
        self.1.lock().unwrap().insert(self.0.clone(), value as f64);
    }
}

impl GaugeFn for Slot {
    fn increment(&self, value: f64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.1.lock().unwrap().insert(self.0.clone(), value);
    }
}

struct Recording(Values);

fn name(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Recording {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Slot(name(key), Arc::clone(&self.0))))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Slot(name(key), Arc::clone(&self.0))))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn export_pushes_counters_and_gauges_with_labels() {
    let bus = Bus::builder().name("m").build().unwrap();
    bus.subscribe("a.*", signal_bus::Target::new(Noop).label("sink"))
        .unwrap();
    for _ in 0..5 {
        bus.publish(Signal::builder("a.b", "/t").build().unwrap())
            .await
            .unwrap();
    }
    let values: Values = Arc::default();
    let recorder = Recording(Arc::clone(&values));
    metrics::with_local_recorder(&recorder, || bus.export_metrics());
    let v = values.lock().unwrap();
    assert_eq!(
        v.get("signal_bus_delivered_total{bus=m,subscription=1,target=sink}"),
        Some(&5.0),
        "{v:?}"
    );
    assert_eq!(
        v.get("signal_bus_failed_total{bus=m,subscription=1,target=sink}"),
        Some(&0.0)
    );
    assert_eq!(
        v.get("signal_bus_queue_depth{bus=m,subscription=1,target=sink}"),
        Some(&0.0)
    );
}
