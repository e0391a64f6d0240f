//! Fuzz target `signing`: the checks of `checks/signing.rs`, which `tests/fuzz_corpus.rs` also
//! runs on every file of `corpus/signing/`.
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::signing::check(data));
