//! The fuzz corpora as regression tests: every file of `fuzz/corpus/<target>/` goes through
//! the same checks (`fuzz/checks/`) that the fuzz target `<target>` runs, on stable, under
//! plain `cargo test`. Targets needing a feature run when it is on (`nats_codec`:
//! `--features nats`).

#[path = "../fuzz/checks/mod.rs"]
mod checks;

use std::{
    fs,
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
};

/// The files of one target's corpus, sorted; the corpus must not be empty.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no inputs", dir.display());
    files
}

/// Runs `check` on every corpus file of `target`, and names every file that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let mut failed = Vec::new();
    let files = corpus(target);
    for path in &files {
        let data = fs::read(path).expect("a readable corpus file");
        if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} `{target}` inputs fail (reproduce with `cargo fuzz run {target} <file>` in fuzz/): {failed:#?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn signal_json_corpus() {
    replay("signal_json", checks::signal_json::check);
}

#[test]
fn pattern_corpus() {
    replay("pattern", checks::pattern::check);
}

#[cfg(feature = "http")]
#[test]
fn signing_corpus() {
    replay("signing", checks::signing::check);
}

/// The seeds named `ok-<scheme>-*` are real signed requests: that scheme accepts them.
#[cfg(feature = "http")]
#[test]
fn signing_seeds_of_real_requests_verify() {
    let mut seen = 0;
    for path in corpus("signing") {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some(rest) = name.strip_prefix("ok-") else {
            continue;
        };
        let index = checks::signing::SCHEMES
            .iter()
            .position(|scheme| rest.starts_with(scheme))
            .unwrap_or_else(|| panic!("{name}: `ok-` is followed by no scheme name"));
        let verdicts = checks::signing::verdicts(&fs::read(&path).expect("readable"))
            .expect("a seed is short");
        assert_eq!(verdicts[index], Ok(()), "{name}");
        seen += 1;
    }
    assert!(
        seen >= checks::signing::SCHEMES.len(),
        "a real request per scheme"
    );
}

#[cfg(feature = "http")]
#[test]
fn http_binding_corpus() {
    replay("http_binding", checks::http_binding::check);
}

#[cfg(feature = "nats")]
#[test]
fn nats_codec_corpus() {
    replay("nats_codec", checks::nats_codec::check);
}
