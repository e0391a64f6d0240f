//! Fuzz target `pattern`: the checks of `checks/pattern.rs`, which `tests/fuzz_corpus.rs` also
//! runs on every file of `corpus/pattern/`.
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::pattern::check(data));
