//! Signal JSON: `Signal::from_json_slice` and `serde_json::from_slice::<Signal>` never panic;
//! whatever either accepts serializes to JSON that both read back as the same signal, and
//! serializes again to the same bytes; when both accept, they agree.

use signal_bus::Signal;

use super::MAX_INPUT;

/// Input: any bytes, read as a signal's CloudEvents JSON.
pub fn check(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let fast = Signal::from_json_slice(data);
    let serde = serde_json::from_slice::<Signal>(data);
    if let Ok(signal) = &fast {
        round_trip(signal, "Signal::from_json_slice");
    }
    if let Ok(signal) = &serde {
        round_trip(signal, "serde_json::from_slice");
    }
    if let (Ok(a), Ok(b)) = (&fast, &serde) {
        assert_eq!(
            super::without_time(a),
            super::without_time(b),
            "the two JSON readers accept different signals"
        );
    }
}

fn round_trip(signal: &Signal, reader: &str) {
    let json = signal.to_json_vec();
    let shown = String::from_utf8_lossy(&json);
    let again = Signal::from_json_slice(&json).unwrap_or_else(|e| {
        panic!("{reader} accepted a signal whose JSON {shown} does not read back: {e}")
    });
    assert_eq!(
        &again, signal,
        "{reader}: JSON {shown} reads back as another signal"
    );
    let via_serde: Signal = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!("{reader} accepted a signal whose JSON {shown} serde does not read back: {e}")
    });
    assert_eq!(
        &via_serde, signal,
        "{reader}: serde reads {shown} as another signal"
    );
    assert_eq!(
        again.to_json_vec(),
        json,
        "{reader}: the JSON of {shown} is not stable"
    );
    let serialized = serde_json::to_vec(signal).expect("a signal serializes");
    let back: Signal = serde_json::from_slice(&serialized).unwrap_or_else(|e| {
        panic!(
            "{reader}: serde's form {} does not read back: {e}",
            String::from_utf8_lossy(&serialized)
        )
    });
    assert_eq!(
        &back, signal,
        "{reader}: serde's form reads back as another signal"
    );
}
