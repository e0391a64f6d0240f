#![cfg(feature = "http")]
//! The Rust side of the interop check (`tests/interop/run`, which CI runs; see
//! `tests/interop/README.md`). Both tests are ignored under plain `cargo test`: they need the
//! Python side in between.
//!
//! - `bus_writes_requests`: the bus's HTTP and webhook adapters deliver signals (structured,
//!   binary with JSON, text and bytes data and extensions, batch; signed with each scheme) to
//!   a real loopback server; each recorded request is written to `$INTEROP_DIR/bus/` with
//!   what a reader must find in it, for `interop.py` to check with the Python libraries.
//! - `bus_reads_python_requests`: reads the requests `interop.py` wrote to `$INTEROP_DIR/py/`
//!   (CNCF CloudEvents SDK, `standardwebhooks` and `svix` signatures) with
//!   `http::read_signals` and the crate's verifiers, and compares them with what Python says
//!   they hold.
//!
//! The second writes its count of checks to `$INTEROP_DIR/bus_reads_python_requests.count`
//! as `passed failed`.

#[path = "../support/mod.rs"]
mod support;

use std::{
    fs,
    path::{Path, PathBuf},
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde_json::{json, Map, Value};
use signal_bus::{
    dispatch, dispatch_batch,
    http::{
        read_signals,
        signing::{GitHub, JidoCompat, SigningScheme, StandardWebhooks, StripeStyle},
        ContentMode, Http, Webhook,
    },
    Adapter, Signal,
};
use support::TestServer;

/// The secrets both sides use (test values, not secrets).
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PLAIN_SECRET: &str = "interop-secret";

fn dir() -> PathBuf {
    PathBuf::from(std::env::var("INTEROP_DIR").expect("INTEROP_DIR: run through tests/interop/run"))
}

/// Writes `passed failed` for the run script, and fails loudly on any failure.
fn finish(name: &str, passed: usize, failures: &[String]) {
    fs::write(
        dir().join(format!("{name}.count")),
        format!("{passed} {}\n", failures.len()),
    )
    .unwrap();
    for failure in failures {
        eprintln!("FAILED {failure}");
    }
    println!("{name}: {passed} passed, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{} interop checks failed",
        failures.len()
    );
}

/// A signal's structured JSON form, with extensions as strings when read from binary mode
/// (binary mode carries no JSON types).
fn expected(signal: &Signal, binary: bool) -> Value {
    let mut v: Value = serde_json::from_slice(&signal.to_json_vec()).unwrap();
    if binary {
        for name in signal.extensions().keys() {
            let text = signal.extension(name).unwrap().to_string();
            v[name.as_str()] = Value::String(text);
        }
    }
    v
}

fn base(id: &str) -> signal_bus::SignalBuilder {
    Signal::builder("order.placed", "/shop eu/ü")
        .id(id)
        .subject("order/7 \"x\" 100%")
        .time_str("2024-05-01T10:00:00.123Z")
        .dataschema("https://example.com/order.json")
        .extension("tenant", "acme corp")
        .extension("attempt", 3)
}

/// The signals sent one at a time, each in structured and binary mode.
fn singles() -> Vec<Signal> {
    vec![
        base("json")
            .data(json!({"total": 42, "items": ["a", "ü"], "ok": true}))
            .build()
            .unwrap(),
        base("json-charset")
            .datacontenttype("application/json; charset=utf-8")
            .data(json!([1, 2.5, null]))
            .build()
            .unwrap(),
        base("text")
            .datacontenttype("text/plain; charset=utf-8")
            .data(json!("hello, wörld"))
            .build()
            .unwrap(),
        // Not UTF-8: bytes to every reader.
        base("bytes")
            .data_bytes(vec![0, 1, 0xfe, 0xff, 0x80])
            .build()
            .unwrap(),
        base("no-data").build().unwrap(),
    ]
}

struct Writer {
    out: PathBuf,
    written: usize,
}

impl Writer {
    /// Records the one request `server` got as `case`.
    async fn write(
        &mut self,
        server: &TestServer,
        case: &str,
        mode: &str,
        expect: Vec<Value>,
        signing: Value,
    ) {
        let reqs = server.wait_for(1).await;
        assert_eq!(reqs.len(), 1, "{case}");
        let req = &reqs[0];
        let headers: Vec<Value> = req
            .headers
            .iter()
            .map(|(n, v)| json!([n.as_str(), v.to_str().unwrap()]))
            .collect();
        let fixture = json!({
            "case": case,
            "mode": mode,
            "headers": headers,
            "body_b64": STANDARD.encode(&req.body),
            "expect": expect,
            "signing": signing,
        });
        fs::write(
            self.out.join(format!("{case}.json")),
            serde_json::to_vec_pretty(&fixture).unwrap(),
        )
        .unwrap();
        self.written += 1;
    }
}

async fn deliver(adapter: impl Adapter, signal: &Signal) {
    let report = dispatch(signal.clone(), adapter).await.unwrap();
    assert!(report.is_ok(), "{report}");
}

fn webhook(server: &TestServer) -> Webhook {
    Webhook::new(&server.url("/hook"))
        .unwrap()
        .allow_private_networks(true)
}

#[tokio::test]
#[ignore = "part of tests/interop/run (needs the Python side)"]
async fn bus_writes_requests() {
    let out = dir().join("bus");
    fs::create_dir_all(&out).unwrap();
    let mut w = Writer { out, written: 0 };
    let none = Value::Null;

    for signal in singles() {
        for (mode, name) in [
            (ContentMode::Structured, "structured"),
            (ContentMode::Binary, "binary"),
        ] {
            let server = TestServer::start().await;
            let http = Http::post(&server.url("/")).unwrap().content_mode(mode);
            deliver(http, &signal).await;
            let expect = vec![expected(&signal, name == "binary")];
            let case = format!("{name}-{}", signal.id());
            w.write(&server, &case, name, expect, none.clone()).await;
        }
    }

    let batch: Vec<Signal> = singles();
    let server = TestServer::start().await;
    let report = dispatch_batch(batch.clone(), Http::post(&server.url("/")).unwrap())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report}");
    let expect = batch.iter().map(|s| expected(s, false)).collect();
    w.write(&server, "batch", "batch", expect, none.clone())
        .await;

    // Signed: Standard Webhooks in every mode (the Python libraries verify text bodies:
    // no bytes data here), and the other schemes once each.
    let signal = &singles()[0];
    let text = &singles()[2];
    let standard = json!({"scheme": "standard-webhooks", "secret": STANDARD_SECRET});
    for (mode, name, s) in [
        (ContentMode::Structured, "structured", signal),
        (ContentMode::Binary, "binary", signal),
        (ContentMode::Binary, "binary", text),
    ] {
        let server = TestServer::start().await;
        let hook = webhook(&server)
            .content_mode(mode)
            .signing(StandardWebhooks::new(STANDARD_SECRET).unwrap());
        deliver(hook, s).await;
        let case = format!("signed-standard-{name}-{}", s.id());
        let expect = vec![expected(s, name == "binary")];
        w.write(&server, &case, name, expect, standard.clone())
            .await;
    }
    let server = TestServer::start().await;
    let hook = webhook(&server).signing(StandardWebhooks::new(STANDARD_SECRET).unwrap());
    let report = dispatch_batch(batch.clone(), hook).await.unwrap();
    assert!(report.is_ok(), "{report}");
    let expect = batch.iter().map(|s| expected(s, false)).collect();
    w.write(&server, "signed-standard-batch", "batch", expect, standard)
        .await;
    let sign = |hook: Webhook, scheme: &str| match scheme {
        "github" => hook.signing(GitHub::new(PLAIN_SECRET).unwrap()),
        "stripe" => hook.signing(StripeStyle::new(PLAIN_SECRET).unwrap()),
        "jido" => hook.signing(JidoCompat::new(PLAIN_SECRET).unwrap()),
        _ => hook,
    };
    for scheme in ["unsigned", "github", "stripe", "jido"] {
        let server = TestServer::start().await;
        deliver(sign(webhook(&server), scheme), signal).await;
        let signing = json!({"scheme": scheme, "secret": PLAIN_SECRET});
        let case = format!("signed-{scheme}");
        let expect = vec![expected(signal, false)];
        w.write(&server, &case, "structured", expect, signing).await;
    }
    println!("wrote {} requests the bus sent", w.written);
}

/// Whether `signal` holds what Python says: every member of `expect` equal in the signal's
/// JSON form (`time` compared as an instant), and no data when `expect` has none.
fn compare(signal: &Signal, expect: &Map<String, Value>) -> Result<(), String> {
    let got: Value = serde_json::from_slice(&signal.to_json_vec()).unwrap();
    for (name, want) in expect {
        if name == "time" {
            let want = chrono::DateTime::parse_from_rfc3339(want.as_str().unwrap_or(""))
                .map_err(|e| format!("expected time {want}: {e}"))?;
            if signal.time() != want {
                return Err(format!(
                    "time is {}, expected {want}",
                    signal.time_rfc3339()
                ));
            }
        } else if got.get(name) != Some(want) {
            return Err(format!("`{name}` is {:?}, expected {want}", got.get(name)));
        }
    }
    for member in ["data", "data_base64"] {
        if !expect.contains_key(member) && got.get(member).is_some() {
            return Err(format!("has `{member}`, expected none"));
        }
    }
    Ok(())
}

fn load(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
#[ignore = "part of tests/interop/run (needs the Python side)"]
fn bus_reads_python_requests() {
    let mut files: Vec<PathBuf> = fs::read_dir(dir().join("py"))
        .expect("the Python side wrote its requests")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the Python side wrote no requests");
    let (mut passed, mut failures) = (0, Vec::new());
    let mut check = |case: &str, what: &str, result: Result<(), String>| match result {
        Ok(()) => passed += 1,
        Err(e) => failures.push(format!("{case}: {what}: {e}")),
    };
    for path in files {
        let fixture = load(&path);
        let case = fixture["case"].as_str().unwrap().to_owned();
        let mut headers = http::HeaderMap::new();
        for pair in fixture["headers"].as_array().unwrap() {
            let (name, value) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
            headers.append(
                http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        let body = STANDARD
            .decode(fixture["body_b64"].as_str().unwrap())
            .unwrap();

        // Signatures first, on the exact body, as a receiver does.
        if let Some(signing) = fixture["signing"].as_object() {
            let secret = signing["secret"].as_str().unwrap();
            let scheme: Box<dyn SigningScheme> = match signing["scheme"].as_str().unwrap() {
                "standard-webhooks" => Box::new(StandardWebhooks::new(secret).unwrap()),
                other => panic!("{case}: unknown scheme {other}"),
            };
            let verdict = scheme.verify(&headers, &body);
            if signing["valid"].as_bool().unwrap() {
                check(
                    &case,
                    "signature verifies",
                    verdict.map_err(|e| e.to_string()),
                );
            } else {
                check(
                    &case,
                    "tampered request is refused",
                    match verdict {
                        Err(_) => Ok(()),
                        Ok(()) => Err("verified".to_owned()),
                    },
                );
                continue;
            }
        }
        let expect = fixture["expect"].as_array().unwrap();
        match read_signals(&headers, &body) {
            Err(e) => check(&case, "read_signals", Err(e.to_string())),
            Ok(signals) if signals.len() != expect.len() => check(
                &case,
                "read_signals",
                Err(format!(
                    "{} signals, expected {}",
                    signals.len(),
                    expect.len()
                )),
            ),
            Ok(signals) => {
                for (i, (signal, want)) in signals.iter().zip(expect).enumerate() {
                    let what = format!("signal {i} holds what the SDK wrote");
                    check(&case, &what, compare(signal, want.as_object().unwrap()));
                }
            }
        }
    }
    finish("bus_reads_python_requests", passed, &failures);
}
