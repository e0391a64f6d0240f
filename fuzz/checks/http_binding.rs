//! The CloudEvents HTTP binding reader (`signal_bus::http::read_signals`, the public one):
//! any headers and body read without panicking, structured, batch or binary; a signal read
//! from a binary-mode request, written back in binary mode, reads back as the same signal
//! (and its structured form too); `ce-*` value percent-encoding round-trips.

use http::{HeaderMap, HeaderName, HeaderValue};
use signal_bus::{
    __fuzz::{decode_value, encode_value, http as binding},
    http::read_signals,
    ContentMode, Signal,
};

use super::{split_message, MAX_INPUT};

/// Input: `name: value` header lines, an empty line, then the body.
pub fn check(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let (pairs, body) = split_message(data);
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }

    for value in headers.values() {
        percent_round_trip(&String::from_utf8_lossy(value.as_bytes()));
    }
    percent_round_trip(&String::from_utf8_lossy(body));

    // Binary mode: a `ce-specversion` header and a content type that is not CloudEvents'.
    let binary = headers.contains_key("ce-specversion")
        && !headers.get("content-type").is_some_and(|ct| {
            let ct = String::from_utf8_lossy(ct.as_bytes())
                .trim_start()
                .to_ascii_lowercase();
            ct.starts_with("application/cloudevents")
        });
    let Ok(signals) = read_signals(&headers, body) else {
        return;
    };
    for signal in &signals {
        // Such data cannot go in binary mode: its content type would make it a CloudEvents
        // request of its own.
        if signal.datacontenttype().is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/cloudevents")
        }) {
            continue;
        }
        let again = write_and_read(signal, "a signal read from the request");
        if binary {
            assert_eq!(&again, signal, "binary mode does not round-trip");
        } else {
            let third = write_and_read(&again, "a signal read back from binary mode");
            assert_eq!(third, again, "binary mode does not round-trip");
        }
        let (_, structured) = binding::encode(signal, ContentMode::Structured);
        let back = Signal::from_json_slice(&structured).unwrap_or_else(|e| {
            panic!(
                "structured body {} does not read back: {e}",
                String::from_utf8_lossy(&structured)
            )
        });
        assert_eq!(&back, signal, "structured mode does not round-trip");
    }
}

/// Writes `signal` in binary mode and reads the request back: exactly one signal.
fn write_and_read(signal: &Signal, what: &str) -> Signal {
    let (headers, body) = binding::encode(signal, ContentMode::Binary);
    match read_signals(&headers, &body) {
        Ok(mut read) if read.len() == 1 => read.remove(0),
        other => panic!(
            "{what}, {signal:?}, written as {headers:?} and body {:?}, reads back as {other:?}",
            String::from_utf8_lossy(&body)
        ),
    }
}

fn percent_round_trip(text: &str) {
    let encoded = encode_value(text);
    assert!(
        encoded.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "encoded {text:?} as {encoded:?}, which is not visible ASCII"
    );
    assert!(
        HeaderValue::from_str(&encoded).is_ok(),
        "{encoded:?} is not a header value"
    );
    assert_eq!(
        decode_value(&encoded).as_deref(),
        Ok(text),
        "{text:?} does not round-trip"
    );
    // Decoding anything either fails or gives text that encodes to a value decoding to it.
    if let Ok(decoded) = decode_value(text) {
        assert_eq!(
            decode_value(&encode_value(&decoded)).as_deref(),
            Ok(&*decoded)
        );
    }
}
