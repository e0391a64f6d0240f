#![cfg(feature = "http")]
//! Receiving: `http::read_signals` reads what the bus's HTTP adapters send, as a real
//! loopback server records it (structured, binary with JSON, text and bytes data, batch), and
//! reads other senders' requests per the CloudEvents HTTP binding, naming what is wrong.
//! Also what the requests carry on the wire: `Content-Type` as it is in binary mode, the
//! `webhook-id` of every webhook, `Content-Length: 0` for a request without a body.

mod support;

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use signal_bus::{
    dispatch, dispatch_batch,
    http::{read_signals, ContentMode, Http, ReadError, Webhook, MAX_BATCH_LEN, MAX_BODY_LEN},
    Signal,
};
use support::TestServer;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

const BINARY: [(&str, &str); 4] = [
    ("ce-specversion", "1.0"),
    ("ce-id", "1"),
    ("ce-source", "/shop"),
    ("ce-type", "order.placed"),
];

fn binary_with(extra: &[(&str, &str)]) -> HeaderMap {
    let mut pairs = BINARY.to_vec();
    pairs.extend_from_slice(extra);
    headers(&pairs)
}

/// Signals with every kind of data and attribute the binding carries.
fn samples() -> Vec<Signal> {
    let base = |id: &str| {
        Signal::builder("order.placed", "/shop eu/ü")
            .id(id)
            .subject("order/7 \"x\" 100%")
            .time_str("2024-05-01T10:00:00.123Z")
            .dataschema("https://example.com/s.json")
            .extension("tenant", "acme corp")
    };
    vec![
        base("json")
            .data(json!({"total": 42, "items": ["a", "ü"]}))
            .build()
            .unwrap(),
        base("json-charset")
            .datacontenttype("application/json; charset=utf-8")
            .data(json!([1, 2]))
            .build()
            .unwrap(),
        base("text")
            .datacontenttype("text/plain; charset=utf-8")
            .data(json!("hello, wörld"))
            .build()
            .unwrap(),
        base("bytes")
            .data_bytes(vec![0, 1, 0xfe, 0xff])
            .build()
            .unwrap(),
        base("none").build().unwrap(),
        base("none-typed")
            .datacontenttype("application/xml")
            .build()
            .unwrap(),
    ]
}

/// The one request a server got, read back.
async fn read_back(server: &TestServer) -> (support::Recorded, Vec<Signal>) {
    let reqs = server.wait_for(1).await;
    assert_eq!(reqs.len(), 1);
    let req = reqs[0].clone();
    let signals = read_signals(&req.headers, &req.body)
        .unwrap_or_else(|e| panic!("{:?} {:?} does not read: {e}", req.headers, req.body));
    (req, signals)
}

#[tokio::test]
async fn structured_requests_read_back_as_the_signals_sent() {
    for signal in samples() {
        let server = TestServer::start().await;
        let report = dispatch(signal.clone(), Http::post(&server.url("/")).unwrap())
            .await
            .unwrap();
        assert!(report.is_ok(), "{report}");
        let (_, got) = read_back(&server).await;
        assert_eq!(got, [signal]);
    }
}

#[tokio::test]
async fn binary_requests_read_back_with_content_type_as_it_is() {
    for signal in samples() {
        let server = TestServer::start().await;
        let http = Http::post(&server.url("/"))
            .unwrap()
            .content_mode(ContentMode::Binary);
        let report = dispatch(signal.clone(), http).await.unwrap();
        assert!(report.is_ok(), "{report}");
        let (req, got) = read_back(&server).await;
        // `Content-Type` is `datacontenttype` unchanged (it was percent-encoded once).
        assert_eq!(
            req.headers.get("content-type").map(|v| v.to_str().unwrap()),
            signal.datacontenttype(),
            "{}",
            signal.id()
        );
        assert_eq!(req.headers["ce-source"], "/shop%20eu/%C3%BC");
        assert_eq!(got, std::slice::from_ref(&signal), "{}", signal.id());
    }
}

/// A request without a body says so: `Content-Length: 0`, for both adapters.
#[tokio::test]
async fn bodiless_binary_requests_send_content_length_zero() {
    let signal = Signal::builder("order.placed", "/shop").build().unwrap();
    let server = TestServer::start().await;
    let http = Http::post(&server.url("/"))
        .unwrap()
        .content_mode(ContentMode::Binary);
    assert!(dispatch(signal.clone(), http).await.unwrap().is_ok());
    let hook = Webhook::new(&server.url("/"))
        .unwrap()
        .allow_private_networks(true)
        .content_mode(ContentMode::Binary);
    assert!(dispatch(signal.clone(), hook).await.unwrap().is_ok());
    let reqs = server.wait_for(2).await;
    for req in &reqs {
        assert!(req.body.is_empty());
        assert_eq!(
            req.headers
                .get("content-length")
                .map(|v| v.to_str().unwrap()),
            Some("0"),
            "{:?}",
            req.headers
        );
        assert!(req.headers.get("transfer-encoding").is_none());
    }
    // The webhook's request reads back as the signal.
    let got = read_signals(&reqs[1].headers, &reqs[1].body).unwrap();
    assert_eq!(got, [signal]);
}

#[tokio::test]
async fn batch_requests_read_back_and_unsigned_webhooks_carry_their_id() {
    let signals: Vec<Signal> = samples();
    let server = TestServer::start().await;
    let report = dispatch_batch(signals.clone(), Http::post(&server.url("/")).unwrap())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report}");
    let (_, got) = read_back(&server).await;
    assert_eq!(got, signals);

    // An unsigned webhook, a single signal in binary mode and a batch: each has its id.
    let server = TestServer::start().await;
    let hook = || {
        Webhook::new(&server.url("/"))
            .unwrap()
            .allow_private_networks(true)
    };
    let one = signals[0].clone();
    let binary = hook().content_mode(ContentMode::Binary);
    assert!(dispatch(one.clone(), binary).await.unwrap().is_ok());
    assert!(dispatch_batch(signals.clone(), hook())
        .await
        .unwrap()
        .is_ok());
    let reqs = server.wait_for(2).await;
    assert_eq!(
        reqs[0].headers["webhook-id"],
        Webhook::message_id(one.source(), one.id()).as_str()
    );
    assert!(reqs[1].headers["webhook-id"]
        .to_str()
        .unwrap()
        .starts_with("msg_"));
    assert_eq!(
        read_signals(&reqs[1].headers, &reqs[1].body).unwrap(),
        signals
    );
}

#[test]
fn binary_mode_per_the_binding() {
    // Percent-decoded attributes, extensions as strings, `Content-Type` as it is.
    let h = binary_with(&[
        ("ce-subject", "a%20b%C3%BC"),
        ("ce-time", "2024-01-01T00:00:00Z"),
        ("ce-tenant", "acme"),
        ("ce-count", "3"),
        ("content-type", "text/plain; charset=utf-8"),
        ("x-other", "ignored"),
    ]);
    let got = read_signals(&h, "héllo".as_bytes()).unwrap();
    let s = &got[0];
    assert_eq!(s.subject(), Some("a bü"));
    assert_eq!(s.datacontenttype(), Some("text/plain; charset=utf-8"));
    assert_eq!(s.data(), Some(&json!("héllo")));
    assert_eq!(s.extension("count").and_then(|v| v.as_str()), Some("3"));
    assert_eq!(s.time_rfc3339(), "2024-01-01T00:00:00Z");

    // JSON data is parsed; a `+json` type is JSON; no content type is JSON.
    for ct in [
        Some("application/json"),
        Some("application/vnd.x+json"),
        None,
    ] {
        let mut h = binary_with(&[]);
        if let Some(ct) = ct {
            h.insert("content-type", HeaderValue::from_static(ct));
        }
        let s = &read_signals(&h, br#"{"k":[1]}"#).unwrap()[0];
        assert_eq!(s.data(), Some(&json!({"k": [1]})), "{ct:?}");
    }
    // Other content is bytes; an empty body is no data.
    let h = binary_with(&[("content-type", "image/png")]);
    let s = &read_signals(&h, &[0x89, 0x50]).unwrap()[0];
    assert_eq!(s.data_bytes(), Some(&[0x89u8, 0x50][..]));
    let s = &read_signals(&binary_with(&[]), b"").unwrap()[0];
    assert!(s.payload().is_none());
}

#[test]
fn structured_and_batch_with_parameters_and_case() {
    let body =
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"a.b","ext":7,"data":{"k":1}}"#;
    for ct in [
        "application/cloudevents+json",
        "application/cloudevents+json; charset=utf-8",
        "Application/CloudEvents+JSON;charset=\"UTF-8\"",
    ] {
        let mut h = headers(&[("content-type", ct)]);
        // ce-* headers are ignored in structured mode.
        h.insert("ce-type", HeaderValue::from_static("other.type"));
        let s = &read_signals(&h, body).unwrap()[0];
        assert_eq!(s.ty(), "a.b", "{ct}");
        assert_eq!(s.extension("ext").map(|v| v.to_string()), Some("7".into()));
    }
    let h = headers(&[(
        "content-type",
        "application/cloudevents-batch+json; charset=utf-8",
    )]);
    let batch = format!(
        "[{}, {}]",
        std::str::from_utf8(body).unwrap(),
        std::str::from_utf8(body).unwrap()
    );
    assert_eq!(read_signals(&h, batch.as_bytes()).unwrap().len(), 2);
    assert_eq!(read_signals(&h, b" [ ] ").unwrap(), []);
}

/// Every error names the header or member at fault.
#[test]
fn errors_name_the_header_or_member() {
    let cases: Vec<(HeaderMap, &[u8], &str)> = vec![
        (
            headers(&[("content-type", "application/json")]),
            b"{}",
            "not a CloudEvents request: no `ce-specversion` header (binary mode), and the content type is neither `application/cloudevents+json` (structured mode) nor `application/cloudevents-batch+json` (batch mode): it is `application/json`",
        ),
        (
            HeaderMap::new(),
            b"",
            "not a CloudEvents request: no `ce-specversion` header (binary mode), and the content type is neither `application/cloudevents+json` (structured mode) nor `application/cloudevents-batch+json` (batch mode): there is none",
        ),
        (
            headers(&[("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-type", "a")]),
            b"",
            "header `ce-source` is missing",
        ),
        (
            binary_with(&[("ce-subject", "%G1")]),
            b"",
            "header `ce-subject` has a `%` not followed by two hex digits",
        ),
        (
            binary_with(&[("ce-type", "other")]),
            b"",
            "header `ce-type` appears more than once; an attribute has one value",
        ),
        (
            binary_with(&[("content-type", "application/json"), ("content-type", "text/plain")]),
            b"",
            "header `content-type` appears more than once",
        ),
        (
            binary_with(&[("ce-time", "yesterday")]),
            b"",
            "header `ce-time` is invalid: time `yesterday` is not an RFC 3339 timestamp",
        ),
        (
            binary_with(&[("ce-bad_name", "x")]),
            b"",
            "header `ce-bad_name` is invalid: extension name `bad_name` is invalid",
        ),
        (
            headers(&[("ce-specversion", "0.3"), ("ce-id", "1"), ("ce-source", "/s"), ("ce-type", "a")]),
            b"",
            "header `ce-specversion` is invalid: specversion `0.3` is not supported",
        ),
        (
            binary_with(&[("content-type", "application/json")]),
            b"{",
            "body is not valid JSON, as its content type says it is: ",
        ),
        (
            binary_with(&[("content-type", "text/plain")]),
            &[0xff],
            "body is not valid UTF-8 text, as its content type says it is: ",
        ),
        (
            headers(&[("content-type", "application/cloudevents+json")]),
            br#"{"specversion":"1.0","id":"1","type":"a"}"#,
            "body is not a valid signal: `source` is required",
        ),
        (
            headers(&[("content-type", "application/cloudevents+json")]),
            br#"{"specversion":"1.0","id":"1","source":"/s","type":"a","type":"b"}"#,
            "body is not a valid signal: duplicate member `type`",
        ),
        (
            headers(&[("content-type", "application/cloudevents-batch+json")]),
            br#"{"specversion":"1.0"}"#,
            "body is not a JSON array of signals: invalid type: map, expected a JSON array of signals",
        ),
        (
            headers(&[("content-type", "application/cloudevents-batch+json")]),
            br#"[{"specversion":"1.0","id":"1","source":"/s","type":"a"}, {"specversion":"1.0","id":"2","source":"/s"}]"#,
            "batch element 1 is not a valid signal: `type` is required",
        ),
        (
            headers(&[("content-type", "application/cloudevents+xml")]),
            b"<e/>",
            "content type `application/cloudevents+xml` is not supported: the only CloudEvents format read is JSON (`+json`)",
        ),
        (
            headers(&[("content-type", "application/cloudevents+json; charset=iso-8859-1")]),
            b"{}",
            "content type `application/cloudevents+json; charset=iso-8859-1` is not supported: CloudEvents JSON is read in UTF-8 only",
        ),
    ];
    for (h, body, expected) in cases {
        let e = read_signals(&h, body).unwrap_err();
        assert!(
            e.to_string().starts_with(expected),
            "{h:?}: got `{e}`, expected `{expected}`"
        );
    }
    // A header value with bytes beyond ASCII (obs-text) is named too.
    let mut h = binary_with(&[]);
    h.insert("ce-subject", HeaderValue::from_bytes(b"\xc3\xa9").unwrap());
    assert_eq!(
        read_signals(&h, b"").unwrap_err().to_string(),
        "header `ce-subject` is not visible ASCII (other bytes are percent-encoded)"
    );
}

#[test]
fn bodies_and_batches_beyond_the_limits_are_refused() {
    let h = headers(&[("content-type", "application/cloudevents-batch+json")]);
    let big = vec![b' '; MAX_BODY_LEN + 1];
    let e = read_signals(&h, &big).unwrap_err();
    assert_eq!(
        e,
        ReadError::BodyTooLarge {
            len: MAX_BODY_LEN + 1,
            max: MAX_BODY_LEN
        }
    );
    assert_eq!(
        e.to_string(),
        format!(
            "body is {} bytes, more than the limit of {MAX_BODY_LEN}",
            MAX_BODY_LEN + 1
        )
    );
    // One element past the limit, counted without being read as signals.
    let mut batch = String::from("[");
    for i in 0..=MAX_BATCH_LEN {
        if i > 0 {
            batch.push(',');
        }
        batch.push_str("{}");
    }
    batch.push(']');
    let e = read_signals(&h, batch.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "batch holds {} signals, more than the limit of {MAX_BATCH_LEN}",
            MAX_BATCH_LEN + 1
        )
    );
    // At the limit, valid signals are read.
    let one = r#"{"specversion":"1.0","id":"1","source":"/s","type":"a"}"#;
    let full = format!("[{}]", vec![one; MAX_BATCH_LEN].join(","));
    assert_eq!(
        read_signals(&h, full.as_bytes()).unwrap().len(),
        MAX_BATCH_LEN
    );
}

/// The API.md contract line.
#[test]
fn api_contract_line() -> Result<(), Box<dyn std::error::Error>> {
    let headers = binary_with(&[]);
    let body: &[u8] = b"";
    let signals: Vec<Signal> = signal_bus::http::read_signals(&headers, body)?;
    assert_eq!(signals.len(), 1);
    let _ = Arc::new(signals);
    Ok(())
}
