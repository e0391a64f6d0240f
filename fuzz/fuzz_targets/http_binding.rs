//! Fuzz target `http_binding`: the checks of `checks/http_binding.rs`, which `tests/fuzz_corpus.rs` also
//! runs on every file of `corpus/http_binding/`.
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::http_binding::check(data));
