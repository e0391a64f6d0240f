//! `signal_bus::testing::Spy`: what it records, how it waits, what a timeout says, detaching.

use std::time::Duration;

use signal_bus::{testing::Spy, Bus, BusError, Signal};
use tokio::time::Instant;

fn signal(ty: &str) -> Signal {
    Signal::builder(ty, "/test").build().unwrap()
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn records_what_its_pattern_receives_in_order() {
    let bus = Bus::builder().build().unwrap();
    let spy = Spy::attach(&bus, "order.*").unwrap();
    for ty in ["order.placed", "user.created", "order.paid"] {
        bus.publish(signal(ty)).await.unwrap();
    }
    assert_eq!(spy.received_types(), ["order.placed", "order.paid"]);
    assert_eq!(spy.received().len(), 2);
    assert_eq!(spy.pattern(), "order.*");
    let subs = bus.subscriptions();
    assert_eq!(subs[0].targets, ["spy order.*"]);

    spy.clear();
    assert!(spy.received().is_empty());
    bus.publish(signal("order.shipped")).await.unwrap();
    assert_eq!(spy.received_types(), ["order.shipped"]);
}

#[tokio::test]
async fn waits_look_at_what_was_received_before_them() {
    let bus = Bus::builder().build().unwrap();
    let spy = Spy::attach(&bus, "**").unwrap();
    let sent = signal("a.b");
    bus.publish(sent.clone()).await.unwrap();
    let got = spy.wait_for_type("a.b", WAIT).await.unwrap();
    assert_eq!(got.id(), sent.id());
    let got = spy.wait_for(|s| s.id() == sent.id(), WAIT).await.unwrap();
    assert_eq!(got.ty(), "a.b");
    assert_eq!(spy.wait_for_count(1, WAIT).await.unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn waits_for_a_signal_published_later() {
    let bus = Bus::builder().build().unwrap();
    let spy = Spy::attach(&bus, "job.*").unwrap();
    let publisher = bus.clone();
    let started = Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        publisher.publish(signal("job.started")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        publisher.publish(signal("job.done")).await.unwrap();
    });
    let done = spy.wait_for_type("job.done", WAIT).await.unwrap();
    assert_eq!(done.ty(), "job.done");
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    let all = spy.wait_for_count(2, WAIT).await.unwrap();
    let types: Vec<&str> = all.iter().map(|s| s.ty()).collect();
    assert_eq!(types, ["job.started", "job.done"]);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_says_what_it_waited_for_and_what_it_saw() {
    let bus = Bus::builder().build().unwrap();
    let spy = Spy::attach(&bus, "user.*").unwrap();
    bus.publish(signal("user.created")).await.unwrap();
    bus.publish(signal("user.renamed")).await.unwrap();

    let started = Instant::now();
    let err = spy
        .wait_for_type("user.deleted", Duration::from_secs(30))
        .await
        .unwrap_err();
    // Paused time: the wait lasted exactly its timeout, and no real time passed.
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert_eq!(err.waited_for, "a signal of type `user.deleted`");
    assert_eq!((err.received, err.after), (2, Duration::from_secs(30)));
    assert_eq!(
        err.to_string(),
        "spy on `user.*` waited 30s for a signal of type `user.deleted`; it received 2 \
         signals: user.created, user.renamed"
    );

    let err = spy
        .wait_for_count(3, Duration::from_millis(5))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("waited 5ms for 3 signals"),
        "{err}"
    );
    let err = spy
        .wait_for(|s| s.subject() == Some("x"), Duration::from_millis(5))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("for a signal matching the predicate"),
        "{err}"
    );

    spy.clear();
    let err = spy
        .wait_for_count(1, Duration::from_millis(1))
        .await
        .unwrap_err();
    assert!(err.to_string().ends_with("it received nothing"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_timeout_lists_the_first_twenty_types() {
    let bus = Bus::builder().build().unwrap();
    let spy = Spy::attach(&bus, "n.*").unwrap();
    for i in 0..25 {
        bus.publish(signal(&format!("n.t{i}"))).await.unwrap();
    }
    let err = spy
        .wait_for_type("n.never", Duration::from_millis(1))
        .await
        .unwrap_err();
    assert_eq!(err.types.len(), 20);
    assert!(err.to_string().ends_with("n.t19, and 5 more"), "{err}");
}

#[tokio::test]
async fn detaches_when_dropped_or_told() {
    let bus = Bus::builder().build().unwrap();
    let spy = Spy::attach(&bus, "a.*").unwrap();
    let other = Spy::attach(&bus, "b.*").unwrap();
    assert_eq!(bus.len(), 2);
    drop(spy);
    assert_eq!(bus.len(), 1);
    other.detach().unwrap();
    assert!(bus.is_empty());
}

#[test]
fn attach_refuses_a_bad_pattern() {
    let bus = Bus::builder().build().unwrap();
    let err = Spy::attach(&bus, "a..b").unwrap_err();
    assert!(matches!(err, BusError::Pattern(_)), "{err:?}");
}
