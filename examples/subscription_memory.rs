//! Memory per subscription: resident set size (from `/proc/self/statm`) before and after
//! subscribing N patterns with a `Noop` target, for literal and `**`-rich patterns.
//!
//! ```text
//! cargo run --release --example subscription_memory
//! cargo run --release --example subscription_memory -- --counts 100000,1000000 --kinds literal,globstar
//! ```
//!
//! Each (layer, kind, N) is measured in a fresh process (the example runs itself with
//! `--one layer:kind:N`). Layer `bus` is `bus.subscribe(pattern, Noop)`; layer `router` is
//! `Router::add(pattern, 0, ())` alone, the share of the routing trie. The figure is (RSS after - RSS before) / N: it
//! includes everything the subscriptions cost (router trie, pattern, subscription record,
//! targets, the id map, allocator overhead and fragmentation), as the process sees it. Linux
//! only (reads `/proc/self/statm`).

use std::time::Instant;

use signal_bus::{adapter::Noop, Bus, Router};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc/self/statm");
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm resident field");
    // The page size of every Linux target this runs on (4 KiB); statm counts pages.
    resident * page_size()
}

fn page_size() -> u64 {
    // AT_PAGESZ from the auxiliary vector, so no libc dependency is needed.
    if let Ok(auxv) = std::fs::read("/proc/self/auxv") {
        for pair in auxv.chunks_exact(16) {
            let key = u64::from_ne_bytes(pair[..8].try_into().unwrap());
            let value = u64::from_ne_bytes(pair[8..].try_into().unwrap());
            if key == 6 {
                return value;
            }
        }
    }
    4096
}

/// The pattern of the `i`-th subscription: literal (three segments, ~70 % of the routing
/// bench's shape) or `**`-rich (a `**` in the middle or at the end, a `*`, a literal).
fn pattern(kind: &str, i: usize) -> String {
    match kind {
        "literal" => format!("svc{}.entity{i}.created", i % 50),
        "globstar" => match i % 4 {
            0 => format!("svc{}.entity{i}.**", i % 50),
            1 => format!("svc{}.**.entity{i}", i % 50),
            2 => format!("**.entity{i}.*"),
            _ => format!("svc{}.*.entity{i}.**", i % 50),
        },
        other => panic!("unknown kind {other}: use literal or globstar"),
    }
}

/// What one measurement subscribes: the whole bus (`bus.subscribe(pattern, Noop)`), or the
/// router alone (`Router::add(pattern, 0, ())`), to tell the router's share.
fn measure(layer: &str, kind: &str, n: usize) -> u64 {
    let bus = Bus::builder().name("memory").build().expect("valid bus");
    let mut router: Router<()> = Router::new();
    // Warm up the allocator and the maps with a few subscriptions first.
    for i in 0..16 {
        bus.subscribe(&format!("warmup.w{i}"), Noop).unwrap();
        router.add(&format!("warmup.w{i}"), 0, ()).unwrap();
    }
    let before = rss_bytes();
    let started = Instant::now();
    match layer {
        "bus" => {
            for i in 0..n {
                bus.subscribe(&pattern(kind, i), Noop)
                    .expect("valid pattern");
            }
        }
        "router" => {
            for i in 0..n {
                router.add(&pattern(kind, i), 0, ()).expect("valid pattern");
            }
        }
        other => panic!("unknown layer {other}"),
    }
    let elapsed = started.elapsed();
    let after = rss_bytes();
    eprintln!(
        "  ({layer} {kind} x {n}: {:.2} s, {:.2} us each)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
    std::hint::black_box((&bus, &router));
    after.saturating_sub(before)
}

fn main() {
    let mut counts = vec![100_000usize, 1_000_000];
    let mut kinds = vec!["literal".to_owned(), "globstar".to_owned()];
    let mut layers = vec!["bus".to_owned(), "router".to_owned()];
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| {
            eprintln!("flag {flag} needs a value");
            std::process::exit(2)
        });
        match flag.as_str() {
            "--counts" => {
                counts = value
                    .split(',')
                    .map(|v| v.replace('_', "").parse().expect("a whole number"))
                    .collect()
            }
            "--kinds" => kinds = value.split(',').map(str::to_owned).collect(),
            "--layers" => layers = value.split(',').map(str::to_owned).collect(),
            // One measurement in this process (the parent runs each in a fresh process, so
            // memory freed by one never hides the growth of the next).
            "--one" => {
                let mut parts = value.split(':');
                let (layer, kind, n) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap().parse().unwrap(),
                );
                println!("{}", measure(layer, kind, n));
                return;
            }
            _ => {
                eprintln!(
                    "unknown flag {flag}: use --counts N,M, --kinds literal,globstar and \
                     --layers bus,router"
                );
                std::process::exit(2)
            }
        }
    }
    println!("examples of patterns:");
    for kind in &kinds {
        println!(
            "  {kind:<9} {}  {}  {}  {}",
            pattern(kind, 0),
            pattern(kind, 1),
            pattern(kind, 2),
            pattern(kind, 3)
        );
    }
    println!(
        "{:<7} {:<9} {:>10} {:>14} {:>16}",
        "layer", "kind", "N", "RSS growth", "bytes/subscr."
    );
    let exe = std::env::current_exe().expect("own path");
    for layer in &layers {
        for kind in &kinds {
            for &n in &counts {
                let out = std::process::Command::new(&exe)
                    .args(["--one", &format!("{layer}:{kind}:{n}")])
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .expect("run a measurement");
                let total: u64 = String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .expect("a measurement");
                println!(
                    "{layer:<7} {kind:<9} {n:>10} {:>11.1} MB {:>16.0}",
                    total as f64 / 1e6,
                    total as f64 / n as f64
                );
            }
        }
    }
}
