#![cfg(feature = "http")]
//! The `Webhook` adapter against real loopback servers: signatures checked by independent
//! code, caller headers never overriding signing headers, several URLs, event names, and the
//! egress guard.

mod support;

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use signal_bus::{
    dispatch,
    http::{
        signing::{GitHub, JidoCompat, SigningScheme, StandardWebhooks, StripeStyle},
        Webhook,
    },
    Adapter, Bus, DeliveryError, ErrorKind, Signal,
};
use support::{Reply, TestServer};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn signal(id: &str) -> Signal {
    Signal::builder("order.placed", "/shop")
        .id(id)
        .data(json!({"total": 42}))
        .build()
        .unwrap()
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hook(server: &TestServer, path: &str) -> Webhook {
    Webhook::new(&server.url(path))
        .unwrap()
        .allow_private_networks(true)
}

fn header<'a>(r: &'a support::Recorded, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn standard_webhooks_signature_verifies_independently() {
    let server = TestServer::start().await;
    let scheme = StandardWebhooks::new(SECRET).unwrap();
    let report = dispatch(signal("msg_1"), hook(&server, "/h").signing(scheme))
        .await
        .unwrap();
    assert!(report.is_ok(), "{report}");
    let req = &server.requests()[0];
    // The message id is derived from the signal's source and id.
    let msg_id = Webhook::message_id("/shop", "msg_1");
    assert_eq!(header(req, "webhook-id"), msg_id);
    let ts = header(req, "webhook-timestamp");
    let now = chrono::Utc::now().timestamp();
    assert!((now - ts.parse::<i64>().unwrap()).abs() < 60);
    // Recompute the signature from the spec, not with the signer.
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut signed = format!("{msg_id}.{ts}.").into_bytes();
    signed.extend_from_slice(&req.body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(hmac_sha256(&key, &signed))
    );
    assert_eq!(header(req, "webhook-signature"), expected);
    // The body is the structured signal the signature covers.
    let got = serde_json::from_slice::<Signal>(&req.body).unwrap();
    assert_eq!((got.id(), got.ty()), ("msg_1", "order.placed"));
    // And the library's receiver-side verifier accepts it, and rejects a tampered body.
    let receiver = StandardWebhooks::new(SECRET).unwrap();
    receiver.verify(&req.headers, &req.body).unwrap();
    let mut tampered = req.body.to_vec();
    tampered[5] ^= 1;
    assert!(receiver.verify(&req.headers, &tampered).is_err());
}

#[tokio::test]
async fn rotation_sends_one_signature_per_active_secret() {
    let server = TestServer::start().await;
    let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let new = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    );
    let scheme = StandardWebhooks::with_secrets([old, new.as_str()]).unwrap();
    dispatch(signal("msg_2"), hook(&server, "/").signing(scheme))
        .await
        .unwrap();
    let req = &server.requests()[0];
    let sigs: Vec<&str> = header(req, "webhook-signature").split(' ').collect();
    assert_eq!(sigs.len(), 2);
    // A receiver holding either secret alone accepts the request.
    StandardWebhooks::new(old)
        .unwrap()
        .verify(&req.headers, &req.body)
        .unwrap();
    StandardWebhooks::new(&new)
        .unwrap()
        .verify(&req.headers, &req.body)
        .unwrap();
}

#[tokio::test]
async fn github_stripe_and_jido_schemes() {
    let server = TestServer::start().await;
    let sent = |i: usize| server.requests()[i].clone();

    dispatch(
        signal("g1"),
        hook(&server, "/gh").signing(GitHub::new("gh-secret").unwrap()),
    )
    .await
    .unwrap();
    let r = sent(0);
    assert_eq!(
        header(&r, "x-hub-signature-256"),
        format!("sha256={}", hex(&hmac_sha256(b"gh-secret", &r.body)))
    );

    dispatch(
        signal("s1"),
        hook(&server, "/stripe").signing(StripeStyle::new("st-secret").unwrap()),
    )
    .await
    .unwrap();
    let r = sent(1);
    let value = header(&r, "stripe-signature");
    let ts = value
        .strip_prefix("t=")
        .and_then(|v| v.split(',').next())
        .unwrap();
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&r.body);
    assert_eq!(
        value,
        format!("t={ts},v1={}", hex(&hmac_sha256(b"st-secret", &signed)))
    );

    let jido = JidoCompat::new("jido-secret")
        .unwrap()
        .signature_header("X-Signature")
        .unwrap();
    dispatch(
        signal("j1"),
        hook(&server, "/jido")
            .signing(jido)
            .event_type_map([("order.placed", "OrderPlaced")]),
    )
    .await
    .unwrap();
    let r = sent(2);
    let ts = header(&r, "x-webhook-timestamp");
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&r.body);
    assert_eq!(
        header(&r, "x-signature"),
        hex(&hmac_sha256(b"jido-secret", &signed))
    );
    assert_eq!(header(&r, "x-webhook-event"), "OrderPlaced");
}

/// A type with `/`, `:` and the like arrives as `x-webhook-event` unchanged; one outside
/// ASCII percent-encoded (a header value carries visible ASCII).
#[tokio::test]
async fn jido_event_header_carries_any_type() {
    let server = TestServer::start().await;
    for (ty, expected) in [
        ("com.example/orders:created", "com.example/orders:created"),
        ("shop.caf\u{e9}+v2@eu~1", "shop.caf%C3%A9+v2@eu~1"),
    ] {
        let s = Signal::builder(ty, "/shop").id("t1").build().unwrap();
        dispatch(s, hook(&server, "/").signing(JidoCompat::new("k").unwrap()))
            .await
            .unwrap();
        let r = server.requests().pop().unwrap();
        assert_eq!(header(&r, "x-webhook-event"), expected);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["type"], ty);
    }
}

#[tokio::test]
async fn caller_headers_never_override_signing_headers() {
    let server = TestServer::start().await;
    let hook = hook(&server, "/")
        .signing(StandardWebhooks::new(SECRET).unwrap())
        .header("Webhook-Signature", "v1,forged")
        .header("WEBHOOK-ID", "forged-id")
        .header("webhook-timestamp", "1")
        .header("x-tenant", "acme");
    dispatch(signal("msg_3"), hook).await.unwrap();
    let req = &server.requests()[0];
    for name in ["webhook-signature", "webhook-id", "webhook-timestamp"] {
        assert_eq!(req.headers.get_all(name).iter().count(), 1, "{name}");
    }
    assert_eq!(
        header(req, "webhook-id"),
        Webhook::message_id("/shop", "msg_3")
    );
    assert_ne!(header(req, "webhook-signature"), "v1,forged");
    assert_eq!(header(req, "x-tenant"), "acme");
    StandardWebhooks::new(SECRET)
        .unwrap()
        .verify(&req.headers, &req.body)
        .unwrap();
}

#[tokio::test]
async fn several_urls_in_sequence_or_in_parallel() {
    let server = TestServer::start().await;
    server.always(Reply::status(204).delay(Duration::from_millis(150)));
    let urls = [server.url("/a"), server.url("/b"), server.url("/c")];
    let sequential = Webhook::urls(&urls).unwrap().allow_private_networks(true);
    assert!(dispatch(signal("m1"), sequential).await.unwrap().is_ok());
    assert_eq!(server.max_in_flight(), 1, "one URL after the other");
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/a", "/b", "/c"]);

    let server = TestServer::start().await;
    server.always(Reply::status(204).delay(Duration::from_millis(150)));
    let urls = [server.url("/a"), server.url("/b"), server.url("/c")];
    let parallel = Webhook::urls(&urls)
        .unwrap()
        .allow_private_networks(true)
        .signing(StandardWebhooks::new(SECRET).unwrap())
        .parallel(true);
    assert!(dispatch(signal("m2"), parallel).await.unwrap().is_ok());
    assert_eq!(server.max_in_flight(), 3, "all URLs at once");
    // One serialization and one signature shared by every URL.
    let reqs = server.requests();
    assert!(reqs.windows(2).all(|w| w[0].body == w[1].body));
    let sig = header(&reqs[0], "webhook-signature");
    assert!(reqs.iter().all(|r| header(r, "webhook-signature") == sig));
}

#[tokio::test]
async fn a_failing_url_is_named_and_the_others_still_get_it() {
    let ok = TestServer::start().await;
    let bad = TestServer::start().await;
    bad.always(Reply::status(503).header("retry-after", "9"));
    let hook = Webhook::urls([ok.url("/ok"), bad.url("/bad?token=x")])
        .unwrap()
        .allow_private_networks(true);
    let report = dispatch(signal("m3"), hook).await.unwrap();
    let e = report.get(0).unwrap().error.unwrap();
    assert!(
        matches!(e, DeliveryError::Endpoints { total: 2, .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "1 of 2 endpoints failed: {}: receiver answered HTTP 503",
            bad.url("/bad?…")
        )
    );
    assert_eq!(e.kind(), ErrorKind::Retryable);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(9)));
    assert_eq!(ok.count(), 1);
}

#[tokio::test]
async fn egress_guard_refuses_private_targets_unless_allowed() {
    let server = TestServer::start().await;
    // A literal loopback address: refused at subscribe, naming the rule.
    let bus = Bus::builder().build().unwrap();
    let e = bus
        .subscribe("a.*", Webhook::new(&server.url("/x")).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("points to 127.0.0.1, a loopback address (127.0.0.0/8 Loopback, RFC 1122: "),
        "{e}"
    );
    assert!(
        e.contains("; webhooks refuse these unless allow_private_networks(true)"),
        "{e}"
    );
    for url in [
        "http://10.0.0.5/x",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "http://0.0.0.0/",
    ] {
        let e = Webhook::new(url).unwrap().validate();
        assert!(e.is_err(), "{url} must be refused");
    }
    // `localhost`, a loopback name by definition: refused at subscribe too, naming the value
    // and the rule, not at the first publish.
    let url = server.localhost_url("/x");
    let e = bus
        .subscribe("a.*", Webhook::new(&url).unwrap())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "target `webhook` is invalid: invalid url `{url}`: names `localhost`, a loopback \
             name (RFC 6761); webhooks refuse it unless allow_private_networks(true)"
        )
    );
    // Delivered directly (no subscribe), the name is resolved and the guard refuses the
    // address at connect time: nothing sent.
    let e = Webhook::new(&url)
        .unwrap()
        .deliver(&signal("m4"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
    assert!(
        e.to_string().contains("host `localhost` resolves to"),
        "{e}"
    );
    assert!(e.to_string().contains("a loopback address"), "{e}");
    assert_eq!(server.count(), 0);
    // Allowed on request.
    let report = dispatch(
        signal("m5"),
        Webhook::new(&server.localhost_url("/x"))
            .unwrap()
            .allow_private_networks(true),
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn signal_ids_with_dots_are_sent_under_a_derived_message_id() {
    let server = TestServer::start().await;
    let report = dispatch(
        signal("a.b"),
        hook(&server, "/").signing(StandardWebhooks::new(SECRET).unwrap()),
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{report}");
    let req = &server.requests()[0];
    let id = header(req, "webhook-id");
    assert_eq!(id, Webhook::message_id("/shop", "a.b"));
    assert!(!id.contains('.'), "{id}");
    StandardWebhooks::new(SECRET)
        .unwrap()
        .verify(&req.headers, &req.body)
        .unwrap();
}

/// `webhook-id` is what receivers deduplicate on: it comes from `(source, id)`, so the same
/// id from two sources is two messages, and a retry of one signal is the same message. The
/// same for every scheme, and for unsigned webhooks.
#[tokio::test]
async fn webhook_ids_come_from_source_and_id_and_survive_retries() {
    let sign = |hook: Webhook, scheme: &str| match scheme {
        "standard-webhooks" => hook.signing(StandardWebhooks::new(SECRET).unwrap()),
        "github" => hook.signing(GitHub::new("gh").unwrap()),
        "stripe" => hook.signing(StripeStyle::new("st").unwrap()),
        "jido" => hook.signing(JidoCompat::new("jd").unwrap()),
        _ => hook,
    };
    for scheme in ["unsigned", "standard-webhooks", "github", "stripe", "jido"] {
        let server = TestServer::start().await;
        // The first attempt of the first signal fails; its retry must keep its id.
        server.reply(Reply::status(503));
        let webhook = sign(hook(&server, "/h"), scheme);
        let target = signal_bus::Target::new(webhook).retry(
            signal_bus::policy::RetryPolicy::constant(Duration::from_millis(1)).max_attempts(3),
        );
        let bus = Bus::builder().build().unwrap();
        bus.subscribe("order.**", target).unwrap();
        for source in ["/service-a", "/service-b"] {
            let s = Signal::builder("order.placed", source)
                .id("1")
                .build()
                .unwrap();
            let report = bus.publish(s).await.unwrap();
            assert!(report.is_ok(), "{scheme} {source}: {report}");
        }
        let reqs = server.requests();
        let ids: Vec<&str> = reqs.iter().map(|r| header(r, "webhook-id")).collect();
        let (a, b) = (
            Webhook::message_id("/service-a", "1"),
            Webhook::message_id("/service-b", "1"),
        );
        assert_ne!(a, b);
        assert_eq!(
            ids,
            [a.as_str(), a.as_str(), b.as_str()],
            "{scheme}: a failed attempt and its retry, then the other source's signal"
        );
        for r in &reqs {
            assert_eq!(
                r.headers.get_all("webhook-id").iter().count(),
                1,
                "{scheme}"
            );
        }
    }
}

#[tokio::test]
async fn secrets_never_show_in_debug() {
    let hook = Webhook::new("https://x.example/h")
        .unwrap()
        .signing(StandardWebhooks::new(SECRET).unwrap())
        .bearer_auth("b34rer");
    let debug = format!("{hook:?}");
    assert!(
        !debug.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "{debug}"
    );
    assert!(!debug.contains("b34rer"), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");
    let scheme: &dyn SigningScheme = &GitHub::new("gh-s3cret").unwrap();
    assert!(!format!("{scheme:?}").contains("gh-s3cret"));
}

#[tokio::test]
async fn egress_guard_refuses_reserved_and_embedded_literals_at_subscribe() {
    let bus = Bus::builder().build().unwrap();
    for (url, kind) in [
        ("http://198.18.0.1/x", "benchmarking"),
        ("http://198.19.255.254/x", "benchmarking"),
        ("http://192.0.0.170/x", "IETF protocol assignment"),
        ("http://192.0.2.10/x", "documentation"),
        ("http://198.51.100.10/x", "documentation"),
        ("http://203.0.113.10/x", "documentation"),
        ("http://192.88.99.1/x", "6to4 relay anycast"),
        ("http://240.0.0.1/x", "reserved"),
        ("http://[64:ff9b::a00:1]/x", "private"),
        ("http://[64:ff9b::7f00:1]/x", "loopback"),
        ("http://[64:ff9b:1::808:808]/x", "local-use NAT64"),
        ("http://[2002:a00:1::1]/x", "6to4"),
        ("http://[2002:808:808::1]/x", "6to4"),
        ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x", "Teredo"),
        ("http://[2001:db8::1]/x", "documentation"),
        ("http://[3fff::1]/x", "documentation"),
        ("http://[100::1]/x", "discard-only"),
        ("http://[5f00::1]/x", "segment-routing (SRv6 SID)"),
        ("http://[fec0::1]/x", "deprecated site-local"),
        ("http://[::ffff:0:7f00:1]/x", "obsolete IPv4-translated"),
        ("http://[::ffff:169.254.169.254]/x", "link-local"),
        ("http://[::a00:1]/x", "deprecated IPv4-compatible"),
        ("http://[ff02::1]/x", "multicast"),
    ] {
        let e = bus
            .subscribe("a.*", Webhook::new(url).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(" {kind} address")) && e.contains("allow_private_networks(true)"),
            "{url}: {e}"
        );
    }
    // Public neighbours, and public IPv4 reached through IPv4-mapped and NAT64 forms, pass.
    for url in [
        "http://198.20.0.1/x",
        "http://198.17.255.255/x",
        "http://192.0.3.1/x",
        "http://203.0.114.1/x",
        "http://[::ffff:8.8.8.8]/x",
        "http://[64:ff9b::808:808]/x",
        "http://[2606:4700:4700::1111]/x",
    ] {
        Webhook::new(url)
            .unwrap()
            .validate()
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    // Allowed on request.
    Webhook::new("http://198.18.0.1/x")
        .unwrap()
        .allow_private_networks(true)
        .validate()
        .unwrap();
}
