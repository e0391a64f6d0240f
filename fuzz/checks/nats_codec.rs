//! The NATS codec of the bridge: any subject, headers and payload decode without panicking,
//! and the same message twice decodes the same way. A signal decoded from another node,
//! forwarded by a third node in either content mode, decodes as the same signal with the
//! forwarder as origin (binary mode keeps extensions as text), and as an echo at the
//! forwarder itself.

use signal_bus::{
    __fuzz::nats,
    cluster::{subject_for, EXTERNAL_ORIGIN, ORIGIN_EXTENSION},
    ContentMode, Signal,
};

use super::{first_line, split_message, MAX_INPUT};

const PREFIX: &str = "signals";
const OWN: &str = "node-a";
const FORWARDER: &str = "node-b";

/// Input: the subject (first line), then `name: value` header lines, an empty line and the
/// payload. No header lines (an empty line right after the subject) is a message without
/// headers.
pub fn check(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let (subject, message) = first_line(data);
    let subject = String::from_utf8_lossy(subject);
    let (pairs, payload) = split_message(message);
    let pairs: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let headers = (!refs.is_empty()).then_some(&refs[..]);

    let first = nats::decode(&subject, headers, payload, PREFIX, OWN);
    let second = nats::decode(&subject, headers, payload, PREFIX, OWN);
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(
            a.as_ref().map(super::without_time),
            b.as_ref().map(super::without_time),
            "the same message decodes as two signals"
        ),
        (Err(_), Err(_)) => {}
        _ => panic!("the same message decodes as {first:?}, then as {second:?}"),
    }
    let Ok(Some(signal)) = first else {
        return;
    };
    let origin = signal
        .extension(ORIGIN_EXTENSION)
        .and_then(|v| v.as_str())
        .expect("a decoded signal has an origin");
    assert_ne!(origin, OWN, "an echo was decoded as a signal");
    assert_eq!(subject, subject_for(PREFIX, signal.ty()));
    let _ = EXTERNAL_ORIGIN;

    // A forwarder sends the signal on without the origin it came with.
    let bare = without_origin(&signal);
    let expected = bare
        .with_extension(ORIGIN_EXTENSION, FORWARDER)
        .expect("a valid extension");
    for mode in [ContentMode::Structured, ContentMode::Binary] {
        let (headers, payload) = nats::encode(&bare, mode, FORWARDER);
        let refs: Option<Vec<(&str, &str)>> = headers
            .as_ref()
            .map(|h| h.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect());
        let decoded = nats::decode(&subject, refs.as_deref(), &payload, PREFIX, OWN);
        let back = match decoded {
            Ok(Some(back)) => back,
            other => panic!(
                "{bare:?} sent in {mode:?} mode as {headers:?} and {:?} decodes as {other:?}",
                String::from_utf8_lossy(&payload)
            ),
        };
        match mode {
            ContentMode::Binary => {
                let mut back_v =
                    serde_json::to_value(as_text_extensions(&back)).expect("serializes");
                let mut expected_v =
                    serde_json::to_value(as_text_extensions(&expected)).expect("serializes");
                // Documented ambiguity of binary mode: string data whose content type is
                // neither JSON nor `text/*` travels as that string's bytes and comes back as
                // bytes (the body cannot say it was a string).
                if let (Some(serde_json::Value::String(s)), Some(bytes)) =
                    (expected.data(), back.data_bytes())
                {
                    if !json_or_text(expected.datacontenttype()) {
                        assert_eq!(bytes, s.as_bytes(), "binary mode: string data as bytes");
                        for v in [&mut back_v, &mut expected_v] {
                            if let Some(map) = v.as_object_mut() {
                                map.remove("data");
                                map.remove("data_base64");
                            }
                        }
                    }
                }
                assert_eq!(
                    back_v,
                    expected_v,
                    "binary mode: datacontenttype {:?} vs {:?}",
                    back.datacontenttype(),
                    expected.datacontenttype()
                );
            }
            _ => assert_eq!(back, expected, "structured mode"),
        }
        let echo = nats::decode(&subject, refs.as_deref(), &payload, PREFIX, FORWARDER);
        assert!(
            matches!(echo, Ok(None)),
            "{mode:?}: not an echo at the sender: {echo:?}"
        );
    }
}

/// The signal without its origin extension.
fn without_origin(signal: &Signal) -> Signal {
    let mut value = serde_json::to_value(signal).expect("a signal serializes");
    if let Some(map) = value.as_object_mut() {
        map.remove(ORIGIN_EXTENSION);
    }
    Signal::from_json_value(value).expect("a signal without an extension is valid")
}

/// The signal with every extension as text, as binary mode carries them.
/// Whether binary mode reads a body of this content type as JSON or as text (the binding's
/// rule: no type, `application/json`, `text/json`, `*+json`, or `text/*`).
fn json_or_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence == "text/json"
        || essence.ends_with("+json")
        || ct.trim_start().starts_with("text/")
}

fn as_text_extensions(signal: &Signal) -> Signal {
    let mut value = serde_json::to_value(signal).expect("a signal serializes");
    if let Some(map) = value.as_object_mut() {
        for (name, v) in map.iter_mut() {
            if signal.extension(name).is_some() {
                *v = serde_json::Value::String(
                    signal
                        .extension(name)
                        .map(|e| e.to_string())
                        .unwrap_or_default(),
                );
            }
        }
    }
    // Binary mode always carries a content type: a signal with data and none gets the
    // default on the way, as the HTTP binding does: `application/json` for JSON data,
    // `application/octet-stream` for bytes (`data_base64`).
    if let Some(map) = value.as_object_mut() {
        if signal.datacontenttype().is_none() {
            if signal.data().is_some() {
                map.insert("datacontenttype".into(), "application/json".into());
            } else if signal.data_bytes().is_some() {
                map.insert("datacontenttype".into(), "application/octet-stream".into());
            }
        }
    }
    Signal::from_json_value(value).expect("text extensions are valid")
}
