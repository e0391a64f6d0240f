//! Fuzz target `nats_codec`: the checks of `checks/nats_codec.rs`, which `tests/fuzz_corpus.rs` also
//! runs on every file of `corpus/nats_codec/`.
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::nats_codec::check(data));
