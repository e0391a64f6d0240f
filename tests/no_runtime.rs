//! What users call from synchronous code, called with no tokio runtime: nothing panics;
//! what needs a runtime to spawn returns an error that says so.

use std::time::Duration;

use signal_bus::{
    adapter::{Channel, Console, Named, Noop, PubSub},
    dispatch_async,
    policy::{CircuitBreaker, Mode, RetryPolicy},
    queue::{Forwarder, MemoryStore, Queue, QueueError},
    Bus, BusError, Signal, Target,
};

fn no_runtime() {
    assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "these tests must run outside any runtime"
    );
}

#[test]
fn building_and_subscribing_need_no_runtime() {
    no_runtime();
    let queue = Queue::builder(MemoryStore::new()).build();
    let bus = Bus::builder()
        .name("sync")
        .queue(queue.clone())
        .build()
        .unwrap();
    let (tx, _rx) = tokio::sync::mpsc::channel(4);
    bus.subscribe("a.*", Channel::new(tx)).unwrap();
    bus.subscribe("a.*", Named::new("n")).unwrap();
    bus.subscribe("a.*", PubSub::new("topic")).unwrap();
    bus.subscribe("a.*", Console::stdout()).unwrap();
    bus.subscribe(
        "a.*",
        Target::new(Noop)
            .mode(Mode::async_with_capacity(8))
            .retry(RetryPolicy::exponential(Duration::from_millis(10)))
            .circuit_breaker(CircuitBreaker::default()),
    )
    .unwrap();
    bus.subscribe("audit.*", Forwarder::new("f", Noop)).unwrap();
    #[cfg(feature = "http")]
    {
        use signal_bus::http::{Http, HttpPool, Webhook};
        let pool = HttpPool::new("p");
        bus.subscribe(
            "a.*",
            Http::post("https://example.com/in").unwrap().pool(&pool),
        )
        .unwrap();
        bus.subscribe("a.*", Webhook::new("https://example.com/hook").unwrap())
            .unwrap();
        bus.subscribe(
            "audit.*",
            Forwarder::new("w", Webhook::new("https://example.com/audit").unwrap()),
        )
        .unwrap();
    }
    let (named_tx, _named_rx) = tokio::sync::mpsc::channel(4);
    bus.register("named", named_tx).unwrap();
    drop(bus);
    drop(queue);
}

#[test]
fn starting_a_queue_outside_a_runtime_is_an_error() {
    no_runtime();
    let queue = Queue::builder(MemoryStore::new()).build();
    let e = queue.start().expect_err("no runtime, no runner");
    assert!(
        matches!(
            e,
            QueueError::NoRuntime {
                call: "Queue::start"
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "`Queue::start` must be called inside a tokio runtime: it spawns a task (call it from \
         async code, or enter a runtime first with `Runtime::enter`)"
    );
    // Inside a runtime it starts.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runner = {
        let _in = rt.enter();
        queue.start().expect("inside a runtime")
    };
    rt.block_on(runner.shutdown());
}

#[test]
fn dispatch_async_outside_a_runtime_is_an_error() {
    no_runtime();
    let signal = Signal::builder("a.b", "/s").build().unwrap();
    let e = dispatch_async(signal, Noop).expect_err("no runtime, no task");
    assert!(
        matches!(
            e,
            BusError::NoRuntime {
                call: "dispatch_async"
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("`dispatch_async` must be called inside a tokio runtime"),
        "{e}"
    );
}

#[cfg(feature = "metrics")]
#[test]
fn the_metrics_exporter_outside_a_runtime_is_an_error() {
    no_runtime();
    let bus = Bus::builder().name("m").build().unwrap();
    let e = bus
        .spawn_metrics_exporter(Duration::from_secs(1))
        .expect_err("no runtime, no exporter");
    assert!(
        matches!(
            e,
            BusError::NoRuntime {
                call: "Bus::spawn_metrics_exporter"
            }
        ),
        "{e:?}"
    );
}
