//! What the fuzz targets check, shared with the regression test that replays their corpora
//! (`tests/fuzz_corpus.rs` in the main crate), so both run exactly the same code.
//!
//! Each module has `check(data: &[u8])`, which panics on a bug: a panic inside the crate, or
//! an answer that breaks the property the module states. Inputs longer than [`MAX_INPUT`]
//! are skipped, so a run measures bugs rather than input size.
//!
//! Included with `#[path]` from both crates: it may use only `signal_bus` and the crates both
//! depend on (`serde_json`, `http`), and `cfg(feature = ...)` means the including crate's
//! features (`http`, `nats`), which both crates name alike.

// Each fuzz target uses one module of the set.
#![allow(dead_code)]

pub mod pattern;
pub mod signal_json;

#[cfg(feature = "http")]
pub mod http_binding;
#[cfg(feature = "nats")]
pub mod nats_codec;
#[cfg(feature = "http")]
pub mod signing;

/// The longest input a check looks at (4 KiB).
pub const MAX_INPUT: usize = 4096;

/// Header lines as (name, value) bytes.
pub type Headers<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Splits a message written like an HTTP head: lines of `name: value` (a line without `:`
/// is skipped, one space after the `:` is dropped) up to the first empty line, then the
/// body, byte for byte. Without an empty line the whole input is headers.
pub fn split_message(data: &[u8]) -> (Headers<'_>, &[u8]) {
    let (head, body) = match find(data, b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None if data.first() == Some(&b'\n') => (&data[..0], &data[1..]),
        None => (data, &data[data.len()..]),
    };
    let head = head.strip_prefix(b"\n").unwrap_or(head);
    let mut headers = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let value = &line[colon + 1..];
            headers.push((&line[..colon], value.strip_prefix(b" ").unwrap_or(value)));
        }
    }
    (headers, body)
}

/// The first line (without its `\n`) and the rest.
pub fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    }
}

/// A signal's JSON without `time`, which a reader sets to the current time when absent (so
/// two readings of the same input compare equal).
pub fn without_time(signal: &signal_bus::Signal) -> serde_json::Value {
    let mut value = serde_json::to_value(signal).expect("a signal serializes");
    if let Some(map) = value.as_object_mut() {
        map.remove("time");
    }
    value
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
