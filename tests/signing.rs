#![cfg(feature = "http")]
//! Webhook signing: published vectors, independent HMAC computations, rotation, tolerance
//! edges, tampering, redaction and constructor errors.
#![cfg(feature = "http")]

use std::time::Duration;

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use sha2::Sha256;
use signal_bus::http::signing::{
    GitHub, JidoCompat, SignInput, SigningScheme, StandardWebhooks, StripeStyle, VerifyError,
};
use signal_bus::ConfigError;

const STD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STD_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const STD_TS: i64 = 1_614_265_330;
const STD_BODY: &[u8] = br#"{"test": 2432232314}"#;
const STD_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

// Two more valid Standard Webhooks secrets (24-byte keys) for rotation.
const OLD_SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"; // bytes 0..24
const NEW_SECRET: &str = "whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM="; // bytes 100..132
const OTHER_SECRET: &str = "whsec_////////////////////////////////"; // 24 x 0xff

/// An independent hex encoder for expected values.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 computed directly with `hmac`/`sha2`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn std_headers(id: &str, ts: &str, sig: &str) -> HeaderMap {
    headers(&[
        ("webhook-id", id),
        ("webhook-timestamp", ts),
        ("webhook-signature", sig),
    ])
}

// ---------------------------------------------------------------------------------------------
// The API contract lines.

#[test]
fn api_contract_compiles_and_behaves() -> Result<(), Box<dyn std::error::Error>> {
    let std_hooks = StandardWebhooks::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
    let body: &[u8] = br#"{"a":1}"#;
    let header: String = std_hooks.sign("msg_1", 1_700_000_000, body);
    assert!(header.starts_with("v1,"));
    let headers = http::HeaderMap::new();
    let r: Result<(), VerifyError> = std_hooks.verify(&headers, body);
    // Neither the standard's headers nor Svix's: the error names both sets.
    assert!(
        matches!(r, Err(VerifyError::MissingHeaders { looked_for }) if looked_for.contains("`webhook-id`") && looked_for.contains("`svix-id`")),
        "{r:?}"
    );
    let gh: String = GitHub::new("secret")?.sign(body);
    assert!(gh.starts_with("sha256="));
    // The trait method works the same way.
    let dyn_scheme: &dyn SigningScheme = &std_hooks;
    assert_eq!(dyn_scheme.verify(&headers, body), r);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Published vectors and independent computations.

#[test]
fn standard_webhooks_published_vector() {
    let s = StandardWebhooks::new(STD_SECRET).unwrap();
    assert_eq!(s.sign(STD_ID, STD_TS, STD_BODY), STD_SIG);
    let h = std_headers(STD_ID, "1614265330", STD_SIG);
    assert_eq!(s.verify_at(&h, STD_BODY, STD_TS), Ok(()));
    // Header names are case-insensitive.
    let h = headers(&[
        ("Webhook-Id", STD_ID),
        ("WEBHOOK-TIMESTAMP", "1614265330"),
        ("Webhook-Signature", STD_SIG),
    ]);
    assert_eq!(s.verify_at(&h, STD_BODY, STD_TS), Ok(()));
}

#[test]
fn standard_webhooks_sign_headers_match_vector() {
    let s = StandardWebhooks::new(STD_SECRET).unwrap();
    let input = SignInput::new(STD_ID, STD_TS, STD_BODY, "test.event");
    let h: HeaderMap = s.sign_headers(&input).into_iter().collect();
    assert_eq!(h["webhook-id"], STD_ID);
    assert_eq!(h["webhook-timestamp"], "1614265330");
    assert_eq!(h["webhook-signature"], STD_SIG);
    assert_eq!(h.len(), 3);
    let names: Vec<String> = s.header_names().iter().map(|n| n.to_string()).collect();
    assert_eq!(
        names,
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
    );
}

#[test]
fn github_docs_vector() {
    let g = GitHub::new("It's a Secret to Everybody").unwrap();
    let sig = g.sign(b"Hello, World!");
    assert_eq!(
        sig,
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
    let h = headers(&[("X-Hub-Signature-256", &sig)]);
    assert_eq!(g.verify(&h, b"Hello, World!"), Ok(()));
    // Upper-case hex is accepted too.
    let upper = format!("sha256={}", sig["sha256=".len()..].to_uppercase());
    let h = headers(&[("x-hub-signature-256", &upper)]);
    assert_eq!(g.verify(&h, b"Hello, World!"), Ok(()));
    assert_eq!(
        g.verify(&h, b"Hello, World?"),
        Err(VerifyError::NoMatchingSignature {
            name: "x-hub-signature-256".into()
        })
    );
    let input = SignInput::new("m", 0, b"Hello, World!", "e");
    let out = g.sign_headers(&input);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "x-hub-signature-256");
    assert_eq!(out[0].1, sig.as_str());
}

#[test]
fn github_errors() {
    let g = GitHub::new("s").unwrap();
    let e = g.verify(&HeaderMap::new(), b"x").unwrap_err();
    assert_eq!(e.to_string(), "header `x-hub-signature-256` is missing");
    for bad in [
        "757107ea",
        "sha1=abcd",
        "sha256=zz",
        "sha256=abc",
        "garbage",
    ] {
        let e = g
            .verify(&headers(&[("x-hub-signature-256", bad)]), b"x")
            .unwrap_err();
        assert!(
            matches!(e, VerifyError::InvalidHeader { ref name, .. } if name == "x-hub-signature-256"),
            "{bad}: {e:?}"
        );
    }
    // Valid hex of the wrong length never matches.
    let e = g
        .verify(&headers(&[("x-hub-signature-256", "sha256=abcd")]), b"x")
        .unwrap_err();
    assert!(matches!(e, VerifyError::NoMatchingSignature { .. }));
}

#[test]
fn stripe_style_matches_independent_hmac() {
    let s = StripeStyle::new("sk_test_secret").unwrap();
    let body = br#"{"id":"evt_1","object":"event"}"#;
    let ts = 1_700_000_123_i64;
    let mut message = format!("{ts}.").into_bytes();
    message.extend_from_slice(body);
    let expected = format!(
        "t={ts},v1={}",
        hex(&hmac_sha256(b"sk_test_secret", &message))
    );
    assert_eq!(s.sign(ts, body), expected);

    let input = SignInput::new("ignored", ts, body, "ignored");
    let out = s.sign_headers(&input);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "stripe-signature");
    assert_eq!(out[0].1, expected.as_str());
    assert_eq!(s.header_names(), ["stripe-signature"]);

    let h = headers(&[("Stripe-Signature", &expected)]);
    assert_eq!(s.verify_at(&h, body, ts), Ok(()));

    // Secrets are bytes: a `whsec_` secret is not decoded.
    let w = StripeStyle::new("whsec_abc").unwrap();
    let mut message = format!("{ts}.").into_bytes();
    message.extend_from_slice(body);
    assert_eq!(
        w.sign(ts, body),
        format!("t={ts},v1={}", hex(&hmac_sha256(b"whsec_abc", &message)))
    );
}

#[test]
fn stripe_style_custom_header_and_several_v1() {
    let s = StripeStyle::new("k1")
        .unwrap()
        .header("X-Signature")
        .unwrap();
    assert_eq!(s.header_names(), ["x-signature"]);
    let other = StripeStyle::new("k2").unwrap();
    let ts = 1_000_000;
    let mine = s.sign(ts, b"b");
    let theirs = other.sign(ts, b"b");
    // Stripe sends one v1 per active secret: ours second.
    let combined = format!("{},{}", theirs, mine.split_once(',').unwrap().1);
    assert_eq!(
        s.verify_at(&headers(&[("x-signature", &combined)]), b"b", ts),
        Ok(())
    );
    // The default header is not read any more.
    let e = s
        .verify_at(&headers(&[("stripe-signature", &mine)]), b"b", ts)
        .unwrap_err();
    assert_eq!(
        e,
        VerifyError::MissingCustomHeader {
            name: "x-signature".into()
        }
    );
    assert_eq!(e.to_string(), "header `x-signature` is missing");
    assert_eq!(e.header_name(), Some("x-signature"));
}

#[test]
fn stripe_style_errors() {
    let s = StripeStyle::new("k").unwrap();
    let ts = 2_000_000;
    let good = s.sign(ts, b"b");
    let v1 = good.split_once(',').unwrap().1;
    let check = |value: &str| s.verify_at(&headers(&[("stripe-signature", value)]), b"b", ts);

    let e = check(v1).unwrap_err();
    assert!(matches!(e, VerifyError::InvalidHeader { .. }), "{e:?}");
    assert!(e.to_string().contains("`t=<timestamp>`"), "{e}");

    let e = check(&format!("t={ts}")).unwrap_err();
    assert!(e.to_string().contains("`v1=<hex>`"), "{e}");

    let e = check(&format!("t={ts},v1=nothex")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "header `stripe-signature` is invalid: no `v1=` entry is valid hex"
    );

    let e = check(&format!("t=soon,{v1}")).unwrap_err();
    assert_eq!(
        e,
        VerifyError::InvalidTimestamp {
            name: "stripe-signature".into(),
            value: "soon".into()
        }
    );

    let e = check(&format!("t={},{v1}", ts - 301)).unwrap_err();
    assert!(matches!(e, VerifyError::TooOld { .. }), "{e:?}");
    let e = check(&format!("t={},{v1}", ts + 301)).unwrap_err();
    assert!(matches!(e, VerifyError::TooNew { .. }), "{e:?}");

    // A timestamp within tolerance but different from the signed one.
    let e = check(&format!("t={},{v1}", ts + 1)).unwrap_err();
    assert_eq!(
        e,
        VerifyError::NoMatchingSignature {
            name: "stripe-signature".into()
        }
    );
    let e = s.verify_at(&HeaderMap::new(), b"b", ts).unwrap_err();
    assert_eq!(e.to_string(), "header `stripe-signature` is missing");
}

#[test]
fn jido_matches_independent_hmac() {
    let j = JidoCompat::new("jido-secret").unwrap();
    let body = br#"{"type":"user.created"}"#;
    let ts = 1_700_000_000_i64;
    let mut message = format!("{ts}.").into_bytes();
    message.extend_from_slice(body);
    let expected = hex(&hmac_sha256(b"jido-secret", &message));
    assert_eq!(j.sign(ts, body), expected);

    let input = SignInput::new("msg_1", ts, body, "user.created");
    let h: HeaderMap = j.sign_headers(&input).into_iter().collect();
    assert_eq!(h.len(), 3);
    assert_eq!(h["x-webhook-signature"], expected.as_str());
    assert_eq!(h["x-webhook-timestamp"], "1700000000");
    assert_eq!(h["x-webhook-event"], "user.created");
    assert_eq!(
        j.header_names(),
        [
            "x-webhook-signature",
            "x-webhook-timestamp",
            "x-webhook-event"
        ]
    );
    assert_eq!(j.verify_at(&h, body, ts), Ok(()));
    // The event header is informational: not required.
    let mut without_event = h.clone();
    without_event.remove("x-webhook-event");
    assert_eq!(j.verify_at(&without_event, body, ts), Ok(()));
}

#[test]
fn jido_custom_header_and_errors() {
    let j = JidoCompat::new("k")
        .unwrap()
        .signature_header("X-Signature")
        .unwrap();
    let ts = 5_000_000;
    let sig = j.sign(ts, b"b");
    let ts_text = ts.to_string();
    let ok = headers(&[("x-signature", &sig), ("x-webhook-timestamp", &ts_text)]);
    assert_eq!(j.verify_at(&ok, b"b", ts), Ok(()));

    let e = j
        .verify_at(&headers(&[("x-webhook-timestamp", &ts_text)]), b"b", ts)
        .unwrap_err();
    assert_eq!(e.to_string(), "header `x-signature` is missing");
    let e = j
        .verify_at(&headers(&[("x-signature", &sig)]), b"b", ts)
        .unwrap_err();
    assert_eq!(
        e,
        VerifyError::MissingHeader {
            name: "x-webhook-timestamp"
        }
    );
    let e = j
        .verify_at(
            &headers(&[("x-signature", "zz"), ("x-webhook-timestamp", &ts_text)]),
            b"b",
            ts,
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "header `x-signature` is invalid: it is not hex"
    );
    let e = j
        .verify_at(
            &headers(&[("x-signature", &sig), ("x-webhook-timestamp", "1e9")]),
            b"b",
            ts,
        )
        .unwrap_err();
    assert!(matches!(e, VerifyError::InvalidTimestamp { .. }), "{e:?}");
    assert_eq!(j.verify_at(&ok, b"b", ts + 300), Ok(()));
    assert_eq!(j.verify_at(&ok, b"b", ts - 300), Ok(()));
    assert!(matches!(
        j.verify_at(&ok, b"b", ts + 301),
        Err(VerifyError::TooOld { .. })
    ));
    assert!(matches!(
        j.verify_at(&ok, b"b", ts - 301),
        Err(VerifyError::TooNew { .. })
    ));
    assert_eq!(
        j.verify_at(&ok, b"c", ts),
        Err(VerifyError::NoMatchingSignature {
            name: "x-signature".into()
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Standard Webhooks: rotation, tolerance, tampering, malformed headers.

#[test]
fn rotation_signs_with_every_secret_and_accepts_any() {
    let both = StandardWebhooks::with_secrets([OLD_SECRET, NEW_SECRET]).unwrap();
    let also_both = StandardWebhooks::new(OLD_SECRET)
        .unwrap()
        .add_secret(NEW_SECRET)
        .unwrap();
    assert_eq!(both.secret_count(), 2);
    let ts = 1_700_000_000;
    let body = b"rotate me";
    let sig = both.sign("msg_1", ts, body);
    assert_eq!(also_both.sign("msg_1", ts, body), sig);
    let parts: Vec<&str> = sig.split(' ').collect();
    assert_eq!(parts.len(), 2, "{sig}");
    let old = StandardWebhooks::new(OLD_SECRET).unwrap();
    let new = StandardWebhooks::new(NEW_SECRET).unwrap();
    assert_eq!(parts[0], old.sign("msg_1", ts, body));
    assert_eq!(parts[1], new.sign("msg_1", ts, body));
    assert!(parts.iter().all(|p| p.starts_with("v1,")));

    let h = std_headers("msg_1", "1700000000", &sig);
    assert_eq!(old.verify_at(&h, body, ts), Ok(()));
    assert_eq!(new.verify_at(&h, body, ts), Ok(()));
    assert_eq!(both.verify_at(&h, body, ts), Ok(()));
    let other = StandardWebhooks::new(OTHER_SECRET).unwrap();
    assert_eq!(
        other.verify_at(&h, body, ts),
        Err(VerifyError::NoMatchingSignature {
            name: "webhook-signature".into()
        })
    );
    // A receiver holding both secrets accepts a sender that only has the new one.
    let h = std_headers("msg_1", "1700000000", &new.sign("msg_1", ts, body));
    assert_eq!(both.verify_at(&h, body, ts), Ok(()));
    // Through the trait, sign_headers carries both signatures.
    let input = SignInput::new("msg_1", ts, body, "e");
    let out: HeaderMap = both.sign_headers(&input).into_iter().collect();
    assert_eq!(out["webhook-signature"], sig.as_str());
}

#[test]
fn tolerance_edges() {
    let s = StandardWebhooks::new(STD_SECRET).unwrap();
    let h = std_headers(STD_ID, "1614265330", STD_SIG);
    assert_eq!(s.verify_at(&h, STD_BODY, STD_TS + 300), Ok(()));
    assert_eq!(s.verify_at(&h, STD_BODY, STD_TS - 300), Ok(()));

    let e = s.verify_at(&h, STD_BODY, STD_TS + 301).unwrap_err();
    assert_eq!(
        e,
        VerifyError::TooOld {
            age: Duration::from_secs(301),
            tolerance: Duration::from_secs(300)
        }
    );
    assert_eq!(
        e.to_string(),
        "timestamp is too old: 301s in the past, beyond the tolerance of 300s"
    );
    let e = s.verify_at(&h, STD_BODY, STD_TS - 301).unwrap_err();
    assert_eq!(
        e,
        VerifyError::TooNew {
            ahead: Duration::from_secs(301),
            tolerance: Duration::from_secs(300)
        }
    );
    assert_eq!(
        e.to_string(),
        "timestamp is too new: 301s in the future, beyond the tolerance of 300s"
    );

    // A custom tolerance.
    let tight = s.clone().tolerance(Duration::from_secs(10));
    assert_eq!(tight.verify_at(&h, STD_BODY, STD_TS + 10), Ok(()));
    assert!(matches!(
        tight.verify_at(&h, STD_BODY, STD_TS + 11),
        Err(VerifyError::TooOld { .. })
    ));
    let stripe = StripeStyle::new("k").unwrap();
    let sh = headers(&[("stripe-signature", &stripe.sign(100, b""))]);
    assert_eq!(stripe.verify_at(&sh, b"", 400), Ok(()));
    assert_eq!(stripe.verify_at(&sh, b"", -200), Ok(()));
    assert!(matches!(
        stripe.verify_at(&sh, b"", 401),
        Err(VerifyError::TooOld { .. })
    ));
    assert!(matches!(
        stripe.verify_at(&sh, b"", -201),
        Err(VerifyError::TooNew { .. })
    ));
}

#[test]
fn verify_uses_the_current_time() {
    let s = StandardWebhooks::new(STD_SECRET).unwrap();
    let now = chrono::Utc::now().timestamp();
    let sig = s.sign("msg_now", now, b"x");
    let h = std_headers("msg_now", &now.to_string(), &sig);
    assert_eq!(s.verify(&h, b"x"), Ok(()));
    // The published vector is from 2021: too old today.
    let old = std_headers(STD_ID, "1614265330", STD_SIG);
    assert!(matches!(
        s.verify(&old, STD_BODY),
        Err(VerifyError::TooOld { .. })
    ));
}

#[test]
fn tampering_is_detected() {
    let s = StandardWebhooks::new(STD_SECRET).unwrap();
    let no_match = Err(VerifyError::NoMatchingSignature {
        name: "webhook-signature".into(),
    });
    // Body.
    let h = std_headers(STD_ID, "1614265330", STD_SIG);
    assert_eq!(
        s.verify_at(&h, br#"{"test": 2432232315}"#, STD_TS),
        no_match
    );
    assert_eq!(s.verify_at(&h, b"", STD_TS), no_match);
    // Id.
    let h = std_headers("msg_p5jXN8AQM9LWM0D4loKWxJeK", "1614265330", STD_SIG);
    assert_eq!(s.verify_at(&h, STD_BODY, STD_TS), no_match);
    // Timestamp (still within tolerance).
    let h = std_headers(STD_ID, "1614265331", STD_SIG);
    assert_eq!(s.verify_at(&h, STD_BODY, STD_TS), no_match);
    // Signature (still valid base64).
    let h = std_headers(
        STD_ID,
        "1614265330",
        "v1,g0hN9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    );
    assert_eq!(s.verify_at(&h, STD_BODY, STD_TS), no_match);
    // Moving the separator between id and timestamp.
    let h = std_headers("msg_p5jXN8AQM9LWM0D4loKWxJek1", "614265330", STD_SIG);
    assert!(s.verify_at(&h, STD_BODY, STD_TS).is_err());
}

#[test]
fn missing_headers_are_named() {
    let s = StandardWebhooks::new(STD_SECRET).unwrap();
    let all = [
        ("webhook-id", STD_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", STD_SIG),
    ];
    for skip in 0..all.len() {
        let pairs: Vec<(&str, &str)> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, p)| *p)
            .collect();
        let e = s.verify_at(&headers(&pairs), STD_BODY, STD_TS).unwrap_err();
        let name = all[skip].0;
        assert_eq!(e, VerifyError::MissingHeader { name });
        assert_eq!(e.to_string(), format!("header `{name}` is missing"));
    }
}

#[test]
fn signature_header_lists_and_garbage() {
    let s = StandardWebhooks::new(STD_SECRET).unwrap();
    let check = |sig: &str| s.verify_at(&std_headers(STD_ID, "1614265330", sig), STD_BODY, STD_TS);
    // Other versions and bad entries are skipped; any v1 match wins.
    assert_eq!(check(&format!("v1a,abcd {STD_SIG}")), Ok(()));
    assert_eq!(check(&format!("v1,bm90IGl0 v1,!!! {STD_SIG}")), Ok(()));
    assert_eq!(check(&format!("  {STD_SIG}  ")), Ok(()));
    assert_eq!(
        check("v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        Err(VerifyError::InvalidHeader {
            name: "webhook-signature".into(),
            reason: "it has no `v1,<base64>` signature"
        })
    );
    for garbage in [
        "garbage",
        "v1",
        "v1,",
        "v1,!!!",
        "v2,abc",
        ",",
        "sha256=abcd",
    ] {
        let e = check(garbage).unwrap_err();
        assert_eq!(
            e.to_string(),
            "header `webhook-signature` is invalid: it has no `v1,<base64>` signature",
            "{garbage:?}"
        );
    }
    // Well-formed but wrong.
    assert_eq!(
        check("v1,bm90IGEgc2lnbmF0dXJl").unwrap_err().to_string(),
        "no signature in header `webhook-signature` matches"
    );
}

#[test]
fn non_integer_timestamps_are_rejected() {
    let s = StandardWebhooks::new(STD_SECRET).unwrap();
    for bad in [
        "abc",
        "1614265330.0",
        "+1614265330",
        " 1614265330",
        "",
        "1e9",
    ] {
        let mut h = std_headers(STD_ID, "0", STD_SIG);
        h.insert("webhook-timestamp", HeaderValue::from_str(bad).unwrap());
        let e = s.verify_at(&h, STD_BODY, STD_TS).unwrap_err();
        assert_eq!(
            e,
            VerifyError::InvalidTimestamp {
                name: "webhook-timestamp".into(),
                value: bad.into()
            },
            "{bad:?}"
        );
        assert!(e
            .to_string()
            .starts_with("header `webhook-timestamp` has timestamp"));
    }
    // Non-ASCII header values.
    let mut h = std_headers(STD_ID, "1614265330", STD_SIG);
    h.insert(
        "webhook-id",
        HeaderValue::from_bytes("msg_é".as_bytes()).unwrap(),
    );
    assert!(matches!(
        s.verify_at(&h, STD_BODY, STD_TS),
        Err(VerifyError::InvalidHeader { ref name, .. }) if name == "webhook-id"
    ));
}

// ---------------------------------------------------------------------------------------------
// Secrets never leak; constructor errors.

#[test]
fn secrets_never_appear_in_debug_or_errors() {
    let raw_key_part = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let s = StandardWebhooks::with_secrets([STD_SECRET, OLD_SECRET]).unwrap();
    let dbg = format!("{s:?} {s:#?}");
    assert_eq!(
        format!("{s:?}"),
        "StandardWebhooks { secrets: [redacted; 2], tolerance: 300s }"
    );
    assert!(!dbg.contains(raw_key_part), "{dbg}");
    assert!(!dbg.contains("AAECAwQF"), "{dbg}");

    let github_secret = "gh-super-secret-value";
    let stripe_secret = "sk_live_super_secret";
    let jido_secret = "jido-super-secret";
    let schemes: Vec<Box<dyn SigningScheme>> = vec![
        Box::new(s),
        Box::new(GitHub::new(github_secret).unwrap()),
        Box::new(StripeStyle::new(stripe_secret).unwrap()),
        Box::new(JidoCompat::new(jido_secret).unwrap()),
    ];
    let body = b"payload";
    for scheme in &schemes {
        let dbg = format!("{scheme:?} {scheme:#?}");
        for secret in [raw_key_part, github_secret, stripe_secret, jido_secret] {
            assert!(!dbg.contains(secret), "{dbg}");
        }
        assert!(dbg.contains("redacted"), "{dbg}");
        // Errors: empty headers, then wrong signatures; never the secret nor the expected
        // signature.
        let ts = 1_700_000_000;
        let signed: HeaderMap = scheme
            .sign_headers(&SignInput::new("msg_1", ts, body, "e"))
            .into_iter()
            .collect();
        let expected_values: Vec<String> = signed
            .values()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let mut errors = vec![scheme.verify(&HeaderMap::new(), body).unwrap_err()];
        errors.push(scheme.verify(&signed, b"other body").unwrap_err());
        for e in errors {
            let text = format!("{e} {e:?}");
            for secret in [raw_key_part, github_secret, stripe_secret, jido_secret] {
                assert!(!text.contains(secret), "{text}");
            }
            for value in &expected_values {
                if value.len() > 20 {
                    assert!(!text.contains(value.as_str()), "{text}");
                }
            }
        }
    }
}

fn config_message(result: Result<impl std::fmt::Debug, ConfigError>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn standard_webhooks_constructor_errors() {
    assert_eq!(
        config_message(StandardWebhooks::new("")),
        "invalid secret `<empty>`: must not be empty"
    );
    assert_eq!(
        config_message(StandardWebhooks::new("whsec_")),
        "invalid secret `whsec_… (redacted)`: has nothing after the `whsec_` prefix"
    );
    let bad_b64 = "whsec_not*base64!!";
    let msg = config_message(StandardWebhooks::new(bad_b64));
    assert_eq!(
        msg,
        "invalid secret `whsec_… (redacted)`: must be standard base64, optionally after a `whsec_` prefix"
    );
    assert!(!msg.contains("not*base64"));
    // 16 bytes: too short.
    let short = "whsec_AAECAwQFBgcICQoLDA0ODw==";
    let msg = config_message(StandardWebhooks::new(short));
    assert_eq!(
        msg,
        "invalid secret `whsec_… (redacted)`: the decoded key is 16 bytes; it must be 24 to 64 bytes"
    );
    assert!(!msg.contains("AAECAwQF"));
    // 65 bytes: too long.
    let long = format!("whsec_{}", "A".repeat(87));
    assert_eq!(
        config_message(StandardWebhooks::new(long)),
        "invalid secret `whsec_… (redacted)`: the decoded key is 65 bytes; it must be 24 to 64 bytes"
    );
    // A bare secret shows no prefix.
    assert!(
        config_message(StandardWebhooks::new("AAECAwQFBgcICQoLDA0ODw=="))
            .starts_with("invalid secret `… (redacted)`")
    );
    // Bare base64, with or without padding, is accepted; 64 bytes is the limit.
    assert!(StandardWebhooks::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
    assert!(StandardWebhooks::new("whsec_".to_owned() + &"A".repeat(86)).is_ok()); // 64 bytes
    assert!(StandardWebhooks::new(NEW_SECRET.trim_end_matches('=')).is_ok());

    // Rotation lists.
    let none: [&str; 0] = [];
    assert_eq!(
        config_message(StandardWebhooks::with_secrets(none)),
        "invalid secrets `[]`: at least one secret is needed"
    );
    let e = StandardWebhooks::with_secrets(["", STD_SECRET, "whsec_AAAA"]).unwrap_err();
    assert!(
        matches!(e, ConfigError::Many(ref v) if v.len() == 2),
        "{e:?}"
    );
    assert!(StandardWebhooks::new(STD_SECRET)
        .unwrap()
        .add_secret("nope")
        .is_err());
}

#[test]
fn byte_secret_constructor_errors() {
    let expected = "invalid secret `<empty>`: must not be empty";
    assert_eq!(config_message(GitHub::new("")), expected);
    assert_eq!(config_message(StripeStyle::new("")), expected);
    assert_eq!(config_message(JidoCompat::new("")), expected);
    assert_eq!(config_message(GitHub::new(b"")), expected);
    assert!(GitHub::new([0u8, 1, 2]).is_ok());

    let rule = "must be a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~, not empty)";
    let msg = config_message(StripeStyle::new("k").unwrap().header("bad header"));
    assert_eq!(
        msg,
        format!("invalid signature header `bad header`: {rule}")
    );
    let msg = config_message(JidoCompat::new("k").unwrap().signature_header("x:sig"));
    assert_eq!(msg, format!("invalid signature header `x:sig`: {rule}"));
    let msg = config_message(JidoCompat::new("k").unwrap().signature_header(""));
    assert_eq!(msg, format!("invalid signature header ``: {rule}"));
    let msg = config_message(JidoCompat::new("k").unwrap().signature_header("a\nb"));
    assert_eq!(msg, format!("invalid signature header `a\\nb`: {rule}"));
}

#[test]
fn msg_id_validation() {
    assert!(StandardWebhooks::validate_msg_id("msg_p5jXN8AQM9LWM0D4loKWxJek").is_ok());
    assert_eq!(
        StandardWebhooks::validate_msg_id("a.b")
            .unwrap_err()
            .to_string(),
        "invalid message id `a.b`: must not contain `.`"
    );
    assert_eq!(
        StandardWebhooks::validate_msg_id("")
            .unwrap_err()
            .to_string(),
        "invalid message id ``: must not be empty"
    );
    assert!(StandardWebhooks::validate_msg_id("has space").is_err());
}

// ---------------------------------------------------------------------------------------------
// Properties: sign then verify roundtrips; flipping any body byte fails.

fn all_schemes() -> Vec<Box<dyn SigningScheme>> {
    vec![
        Box::new(StandardWebhooks::with_secrets([OLD_SECRET, NEW_SECRET]).unwrap()),
        Box::new(StandardWebhooks::new(STD_SECRET).unwrap()),
        Box::new(GitHub::new("gh").unwrap()),
        Box::new(StripeStyle::new("st").unwrap()),
        Box::new(JidoCompat::new("ji").unwrap()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn sign_then_verify_roundtrips(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        id in "[A-Za-z0-9_-]{1,40}",
        ts in 0i64..4_000_000_000,
        skew in -300i64..=300,
        flip_at in any::<prop::sample::Index>(),
        flip_mask in 1u8..=255,
    ) {
        prop_assert!(StandardWebhooks::validate_msg_id(&id).is_ok());
        let now = ts + skew;
        let std_hooks = StandardWebhooks::new(STD_SECRET).unwrap();
        let h = std_headers(&id, &ts.to_string(), &std_hooks.sign(&id, ts, &body));
        prop_assert_eq!(std_hooks.verify_at(&h, &body, now), Ok(()));
        let stripe = StripeStyle::new("st").unwrap();
        let sh = headers(&[("stripe-signature", &stripe.sign(ts, &body))]);
        prop_assert_eq!(stripe.verify_at(&sh, &body, now), Ok(()));
        let jido = JidoCompat::new("ji").unwrap();
        let ts_text = ts.to_string();
        let jh = headers(&[("x-webhook-signature", &jido.sign(ts, &body)), ("x-webhook-timestamp", &ts_text)]);
        prop_assert_eq!(jido.verify_at(&jh, &body, now), Ok(()));

        let mut tampered = body.clone();
        if !tampered.is_empty() {
            let i = flip_at.index(tampered.len());
            tampered[i] ^= flip_mask;
        }
        if !body.is_empty() {
            let is_no_match = |r: Result<(), VerifyError>| {
                matches!(r, Err(VerifyError::NoMatchingSignature { .. }))
            };
            prop_assert!(is_no_match(std_hooks.verify_at(&h, &tampered, now)));
            prop_assert!(is_no_match(stripe.verify_at(&sh, &tampered, now)));
            prop_assert!(is_no_match(jido.verify_at(&jh, &tampered, now)));
        }
    }

    #[test]
    fn trait_sign_headers_roundtrip_now(
        body in proptest::collection::vec(any::<u8>(), 1..256),
        id in "[A-Za-z0-9_-]{1,40}",
        flip_at in any::<prop::sample::Index>(),
        flip_mask in 1u8..=255,
    ) {
        let now = chrono::Utc::now().timestamp();
        let input = SignInput::new(&id, now, &body, "prop.event");
        let mut tampered = body.clone();
        let i = flip_at.index(tampered.len());
        tampered[i] ^= flip_mask;
        for scheme in all_schemes() {
            let signed: HeaderMap = scheme.sign_headers(&input).into_iter().collect();
            prop_assert_eq!(scheme.verify(&signed, &body), Ok(()), "{}", scheme.name());
            let is_no_match = matches!(
                scheme.verify(&signed, &tampered),
                Err(VerifyError::NoMatchingSignature { .. })
            );
            prop_assert!(is_no_match, "{}", scheme.name());
        }
    }
}
