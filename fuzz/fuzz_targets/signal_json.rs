//! Fuzz target `signal_json`: the checks of `checks/signal_json.rs`, which `tests/fuzz_corpus.rs` also
//! runs on every file of `corpus/signal_json/`.
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::signal_json::check(data));
