//! Trace context (`traceparent`/`tracestate`, the CloudEvents distributed-tracing extension)
//! across every hop: HTTP structured and binary to a real loopback server and back through
//! `read_signals`, NATS core both ways through the bridge, the durable SQLite queue's
//! forwarder; and, with the `opentelemetry` feature, one trace from a publisher over HTTP and
//! NATS to the delivery spans on the far side.
//!
//! The NATS tests need the server at `SIGNAL_BUS_NATS_URL` and are skipped (with a note)
//! when it is unset; the end-to-end test then keeps its HTTP leg.
#![cfg(feature = "http")]

#[cfg(feature = "nats")]
#[path = "support/nats.rs"]
mod nats;
#[path = "support/scratch.rs"]
mod scratch;
mod support;

use std::time::Duration;

use signal_bus::{
    http::{read_signals, Http},
    trace::TraceContext,
    ContentMode, Signal,
};
use support::TestServer;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
/// An invalid `traceparent` from outside: it passes through as it came.
const JUNK: &str = "00-not-a-traceparent";

fn traced(i: usize) -> Signal {
    Signal::builder("order.placed", "/tests/trace")
        .id(format!("traced-{i}"))
        .traceparent(TRACEPARENT)
        .tracestate(TRACESTATE)
        .data(serde_json::json!({"i": i}))
        .build()
        .unwrap()
}

fn junk(i: usize) -> Signal {
    Signal::builder("order.placed", "/tests/trace")
        .id(format!("junk-{i}"))
        .extension("traceparent", JUNK)
        .extension("tracestate", "Not A State")
        .build()
        .unwrap()
}

/// The signal arrived with its trace extensions exactly as sent.
fn assert_untouched(sent: &Signal, got: &Signal) {
    assert_eq!(got.id(), sent.id());
    assert_eq!(got.traceparent(), sent.traceparent(), "{got:?}");
    assert_eq!(got.tracestate(), sent.tracestate(), "{got:?}");
    assert_eq!(got.trace_context(), sent.trace_context());
}

#[test]
fn the_builder_checks_and_the_accessors_read() {
    let s = traced(0);
    assert_eq!(s.traceparent(), Some(TRACEPARENT));
    assert_eq!(s.tracestate(), Some(TRACESTATE));
    let tc = s.trace_context().unwrap();
    assert_eq!(tc, TRACEPARENT.parse::<TraceContext>().unwrap());
    assert!(tc.sampled());

    let e = Signal::builder("a.b", "/x")
        .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1")
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "traceparent `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1` is invalid: a \
         version 00 traceparent is 55 characters long, this one 54"
    );
    let e = Signal::builder("a.b", "/x")
        .tracestate("a=1,a=2")
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "tracestate `a=1,a=2` is invalid: the key `a` appears more than once"
    );
    let from_context = Signal::builder("a.b", "/x")
        .trace_context(tc)
        .build()
        .unwrap();
    assert_eq!(from_context.traceparent(), Some(TRACEPARENT));

    // From outside (JSON, headers) an invalid one is an ordinary extension: kept, unused.
    let j = junk(0);
    assert_eq!(j.traceparent(), Some(JUNK));
    assert_eq!(j.trace_context(), None);
    let back = Signal::from_json_slice(&j.to_json_bytes()).unwrap();
    assert_untouched(&j, &back);
}

#[tokio::test]
async fn http_structured_and_binary_carry_it_to_read_signals_untouched() {
    for mode in [ContentMode::Structured, ContentMode::Binary] {
        let server = TestServer::start().await;
        let sent = [traced(1), junk(1)];
        for s in &sent {
            let http = Http::post(&server.url("/in")).unwrap().content_mode(mode);
            let report = signal_bus::dispatch(s.clone(), http).await.unwrap();
            assert!(report.is_ok(), "{report}");
        }
        let reqs = server.wait_for(2).await;
        if mode == ContentMode::Binary {
            assert_eq!(reqs[0].headers["ce-traceparent"], TRACEPARENT);
            assert_eq!(reqs[0].headers["ce-tracestate"], TRACESTATE);
            assert_eq!(reqs[1].headers["ce-traceparent"], JUNK);
        }
        for (sent, req) in sent.iter().zip(&reqs) {
            let got = read_signals(&req.headers, &req.body).unwrap();
            assert_eq!(got.len(), 1);
            assert_untouched(sent, &got[0]);
        }
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_durable_sqlite_forwarder_keeps_it() {
    use signal_bus::{
        queue::{DispatchMode, Forwarder, Queue, SqliteStore},
        Bus,
    };
    let dir = scratch::TempDir::new("trace");
    let server = TestServer::start().await;
    let queue = Queue::builder(SqliteStore::open(dir.db()).await.unwrap())
        .poll_interval(Duration::from_millis(10))
        .build();
    let bus = Bus::builder().queue(queue.clone()).build().unwrap();
    bus.subscribe(
        "order.*",
        Forwarder::new(
            "out",
            Http::post(&server.url("/q"))
                .unwrap()
                .content_mode(ContentMode::Binary),
        )
        .dispatch(DispatchMode::Async),
    )
    .unwrap();
    let sent = [traced(2), junk(2)];
    for s in &sent {
        let report = bus.publish(s.clone()).await.unwrap();
        assert_eq!(report.queued(), 1, "{report}");
    }
    let runner = queue.start().unwrap();
    let reqs = server.wait_for(2).await;
    runner.shutdown().await;
    let mut got: Vec<Signal> = reqs
        .iter()
        .flat_map(|r| read_signals(&r.headers, &r.body).unwrap())
        .collect();
    got.sort_by(|a, b| b.id().cmp(a.id())); // traced-2, junk-2
    for (sent, got) in sent.iter().zip(&got) {
        assert_untouched(sent, got);
    }
    bus.shutdown(Duration::from_secs(5)).await;
}

#[cfg(feature = "nats")]
fn nats_url_set() -> bool {
    if std::env::var_os("SIGNAL_BUS_NATS_URL").is_some() {
        return true;
    }
    eprintln!("SIGNAL_BUS_NATS_URL is unset: skipping the NATS part");
    false
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn nats_core_carries_it_both_ways_through_the_bridge() {
    use signal_bus::{adapter::PubSub, cluster::NatsBridge};
    if !nats_url_set() {
        return;
    }
    let client = nats::connect().await;
    let (prefix, _) = nats::unique("trace");
    let (a, mut a_inbox) = nats::bus_with_inbox("trace-a", "order.**");
    let (b, mut b_inbox) = nats::bus_with_inbox("trace-b", "order.**");
    // A sends structured, B binary; each bridges the other's in.
    a.subscribe("order.**", PubSub::nats(client.clone()).prefix(&prefix))
        .unwrap();
    b.subscribe(
        "order.**",
        PubSub::nats(client.clone())
            .prefix(&prefix)
            .content_mode(ContentMode::Binary),
    )
    .unwrap();
    let a_bridge = NatsBridge::builder(client.clone(), &a)
        .prefix(&prefix)
        .start()
        .await
        .unwrap();
    let b_bridge = NatsBridge::builder(client.clone(), &b)
        .prefix(&prefix)
        .start()
        .await
        .unwrap();
    client.flush().await.unwrap();

    let (from_a, from_b) = ([traced(3), junk(3)], [traced(4), junk(4)]);
    for s in &from_a {
        a.publish(s.clone()).await.unwrap();
    }
    for s in &from_b {
        b.publish(s.clone()).await.unwrap();
    }
    let wait = Duration::from_secs(10);
    // Each inbox holds its own two (published locally) and the other bus's two.
    let at_b = nats::recv_n(&mut b_inbox, 4, wait).await;
    let at_a = nats::recv_n(&mut a_inbox, 4, wait).await;
    for (sent, inbox) in [(&from_a, &at_b), (&from_b, &at_a)] {
        for s in sent.iter() {
            let got = inbox.iter().find(|g| g.id() == s.id()).expect("bridged");
            assert_untouched(s, got);
        }
    }
    a_bridge.shutdown().await;
    b_bridge.shutdown().await;
}

/// One trace from a publisher's span over HTTP and NATS to the delivery spans on the far
/// side, exported through an in-memory OpenTelemetry exporter.
#[cfg(feature = "opentelemetry")]
mod otel {
    use std::sync::Arc;

    use axum::{
        body::Bytes,
        extract::State,
        http::{HeaderMap, StatusCode},
        routing::post,
        Router,
    };
    use opentelemetry::trace::{SpanId, TraceContextExt, TraceId, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use signal_bus::{
        adapter::{Channel, Noop},
        trace::{parent_context, receive_span, set_span_parent, span_trace_context},
        Bus,
    };
    use tokio::sync::mpsc;
    use tracing::Instrument;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Spans recorded on this thread (the tests run on tokio's current-thread runtime) go
    /// to the returned exporter.
    fn otel_on_this_thread() -> (InMemorySpanExporter, tracing::subscriber::DefaultGuard) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = provider.tracer("signal-bus-tests");
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        (exporter, tracing::subscriber::set_default(subscriber))
    }

    fn ids_of(span: &tracing::Span) -> (TraceId, SpanId) {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid(), "the span has an OpenTelemetry context");
        (sc.trace_id(), sc.span_id())
    }

    fn attribute(span: &SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    /// Waits for a finished span named `name` whose attribute `kind` (or `forwarder`) is
    /// `kind`.
    async fn finished(exporter: &InMemorySpanExporter, name: &str, kind: &str) -> SpanData {
        let find = || {
            exporter
                .get_finished_spans()
                .unwrap()
                .into_iter()
                .find(|s| {
                    s.name == name
                        && (attribute(s, "kind").as_deref() == Some(kind)
                            || attribute(s, "forwarder").as_deref() == Some(kind))
                })
        };
        scratch::wait_until(&format!("span {name} ({kind})"), || find().is_some()).await;
        find().unwrap()
    }

    #[derive(Clone)]
    struct Receiver {
        bus: Bus,
        seen: mpsc::Sender<Signal>,
    }

    /// The far side of the HTTP leg: reads the request with `read_signals` and publishes
    /// each signal into its bus inside a `signal_bus.receive` span parented by the signal.
    async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let Ok(signals) = read_signals(&headers, &body) else {
            return StatusCode::BAD_REQUEST;
        };
        for signal in signals {
            let span = receive_span(&signal, "http");
            let _ = r.seen.send(signal.clone()).await;
            if r.bus.publish(signal).instrument(span).await.is_err() {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
        }
        StatusCode::NO_CONTENT
    }

    async fn serve(receiver: Receiver) -> String {
        let app = Router::new()
            .route("/in", post(receive))
            .with_state(receiver);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/in")
    }

    #[tokio::test]
    async fn one_trace_from_the_publisher_over_http_and_nats_to_the_far_delivery_spans() {
        let (exporter, _guard) = otel_on_this_thread();

        // Bus B: what the HTTP receiver publishes into; it sends on over NATS when there is
        // a server.
        let bus_b = Bus::builder()
            .name("trace-b")
            .node_id("trace-b")
            .build()
            .unwrap();
        #[cfg(feature = "nats")]
        let nats_leg = if nats_url_set() {
            let client = nats::connect().await;
            let (prefix, _) = nats::unique("otel");
            bus_b
                .subscribe(
                    "order.**",
                    signal_bus::adapter::PubSub::nats(client.clone()).prefix(&prefix),
                )
                .unwrap();
            let (bus_c, inbox) = nats::bus_with_inbox("trace-c", "order.**");
            let bridge = signal_bus::cluster::NatsBridge::builder(client.clone(), &bus_c)
                .prefix(&prefix)
                .start()
                .await
                .unwrap();
            client.flush().await.unwrap();
            Some((bus_c, inbox, bridge))
        } else {
            None
        };
        let (seen_tx, mut seen) = mpsc::channel(8);
        let url = serve(Receiver {
            bus: bus_b.clone(),
            seen: seen_tx,
        })
        .await;

        // Bus A publishes inside a span with an OpenTelemetry context.
        let bus_a = Bus::builder().name("trace-a").build().unwrap();
        bus_a
            .subscribe("order.**", Http::post(&url).unwrap())
            .unwrap();
        let publisher = tracing::info_span!("publisher");
        let (trace_id, publisher_id) = ids_of(&publisher);
        let plain = Signal::builder("order.placed", "/tests/otel")
            .build()
            .unwrap();
        assert_eq!(plain.traceparent(), None);
        let report = bus_a
            .publish(plain)
            .instrument(publisher.clone())
            .await
            .unwrap();
        assert!(report.is_ok(), "{report}");
        drop(publisher);

        // The receiver read the publisher's trace id.
        let got = seen.recv().await.unwrap();
        let tc = got.trace_context().expect("publish stamped a traceparent");
        assert_eq!(TraceId::from_bytes(tc.trace_id()), trace_id);
        assert_eq!(SpanId::from_bytes(tc.parent_id()), publisher_id);
        assert!(tc.sampled());
        let http_span = finished(&exporter, "signal_bus.receive", "http").await;
        assert_eq!(http_span.span_context.trace_id(), trace_id);
        assert_eq!(http_span.parent_span_id, publisher_id);
        assert!(http_span.parent_span_is_remote);
        assert_eq!(
            attribute(&http_span, "trace_id").as_deref(),
            Some(tc.trace_id_hex().as_str())
        );
        let publisher_span = finished_named(&exporter, "publisher").await;
        assert_eq!(publisher_span.span_context.span_id(), publisher_id);

        #[cfg(feature = "nats")]
        if let Some((bus_c, mut inbox, bridge)) = nats_leg {
            let far = nats::recv_n(&mut inbox, 1, Duration::from_secs(10)).await;
            assert_eq!(
                far[0].traceparent(),
                got.traceparent(),
                "untouched over NATS"
            );
            let bridged = finished(&exporter, "signal_bus.receive", "nats").await;
            assert_eq!(bridged.span_context.trace_id(), trace_id);
            // The extension is the publisher's, untouched: the bridge's span is its child.
            assert_eq!(bridged.parent_span_id, publisher_id);
            bridge.shutdown().await;
            bus_c.shutdown(Duration::from_secs(5)).await;
        }
        bus_a.shutdown(Duration::from_secs(5)).await;
        bus_b.shutdown(Duration::from_secs(5)).await;
    }

    async fn finished_named(exporter: &InMemorySpanExporter, name: &str) -> SpanData {
        let find = || {
            exporter
                .get_finished_spans()
                .unwrap()
                .into_iter()
                .find(|s| s.name == name)
        };
        scratch::wait_until(&format!("span {name}"), || find().is_some()).await;
        find().unwrap()
    }

    #[tokio::test]
    async fn a_forwarder_job_delivers_in_a_span_parented_by_the_signal() {
        use signal_bus::queue::{DispatchMode, Forwarder, MemoryStore, Queue};
        let (exporter, _guard) = otel_on_this_thread();
        let queue = Queue::builder(MemoryStore::new())
            .poll_interval(Duration::from_millis(10))
            .build();
        let bus = Bus::builder().queue(queue.clone()).build().unwrap();
        bus.subscribe(
            "order.*",
            Forwarder::new("later", Noop).dispatch(DispatchMode::Async),
        )
        .unwrap();
        let publisher = tracing::info_span!("publisher");
        let (trace_id, publisher_id) = ids_of(&publisher);
        let s = Signal::builder("order.placed", "/tests/otel")
            .build()
            .unwrap();
        bus.publish(s).instrument(publisher.clone()).await.unwrap();
        drop(publisher);
        let runner = queue.start().unwrap();
        let deliver = finished(&exporter, "signal_bus.deliver", "later").await;
        runner.shutdown().await;
        assert_eq!(deliver.span_context.trace_id(), trace_id);
        assert_eq!(deliver.parent_span_id, publisher_id);
        assert_eq!(attribute(&deliver, "attempt").as_deref(), Some("1"));
        bus.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn publish_keeps_a_signal_s_own_context_and_adds_none_without_one() {
        let (_exporter, _guard) = otel_on_this_thread();
        let bus = Bus::builder().build().unwrap();
        let (tx, mut rx) = mpsc::channel::<Arc<Signal>>(8);
        bus.subscribe("order.*", Channel::new(tx)).unwrap();

        // Outside any span: nothing is added.
        bus.publish(Signal::builder("order.a", "/t").build().unwrap())
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap().traceparent(), None);

        // Inside a span: a signal's own context, valid or not, is kept as it is.
        let span = tracing::info_span!("publisher");
        for sent in [traced(5), junk(5)] {
            bus.publish(sent.clone())
                .instrument(span.clone())
                .await
                .unwrap();
            assert_untouched(&sent, &rx.recv().await.unwrap());
        }

        // The span's tracestate goes along with its traceparent.
        let parent = traced(6);
        let child = tracing::info_span!("child");
        assert!(set_span_parent(&child, &parent));
        let (trace_id, child_id) = ids_of(&child);
        let (tc, state) = span_trace_context(&child).unwrap();
        assert_eq!(state.as_deref(), Some(TRACESTATE));
        bus.publish(Signal::builder("order.b", "/t").build().unwrap())
            .instrument(child)
            .await
            .unwrap();
        let got = rx.recv().await.unwrap();
        assert_eq!(got.trace_context(), Some(tc));
        assert_eq!(TraceId::from_bytes(tc.trace_id()), trace_id);
        assert_eq!(SpanId::from_bytes(tc.parent_id()), child_id);
        assert_eq!(got.tracestate(), Some(TRACESTATE));
        bus.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn an_invalid_traceparent_is_never_a_parent() {
        let (exporter, _guard) = otel_on_this_thread();
        assert!(parent_context(&junk(7)).is_none());
        let cx = parent_context(&traced(7)).unwrap();
        assert_eq!(cx.span().span_context().trace_state().header(), TRACESTATE);
        {
            let span = receive_span(&junk(7), "http");
            assert!(!set_span_parent(&span, &junk(7)));
            let _entered = span.enter();
        }
        let span = finished(&exporter, "signal_bus.receive", "http").await;
        assert_eq!(
            span.parent_span_id,
            SpanId::INVALID,
            "a root span of its own"
        );
        assert_ne!(
            span.span_context.trace_id(),
            TraceId::from_bytes(traced(7).trace_context().unwrap().trace_id())
        );
        assert_eq!(attribute(&span, "trace_id"), None);
    }
}
