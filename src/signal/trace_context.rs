//! The W3C Trace Context values a signal carries as the CloudEvents distributed-tracing
//! extension: `traceparent` ([`TraceContext`]) and `tracestate` ([`validate_tracestate`]).

use std::{fmt, str::FromStr};

use super::{shown_type, SignalError};

/// The extension that carries a signal's W3C `traceparent` (the CloudEvents
/// distributed-tracing extension).
pub const TRACEPARENT: &str = "traceparent";
/// The extension that carries a signal's W3C `tracestate` (the CloudEvents
/// distributed-tracing extension).
pub const TRACESTATE: &str = "tracestate";
/// The most list-members a `tracestate` may have (W3C Trace Context).
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// The longest `tracestate` accepted, in bytes (W3C Trace Context: what every vendor must
/// propagate at least).
pub const MAX_TRACESTATE_LEN: usize = 512;

/// The length of a version `00` `traceparent`, and of the part of a later version's that
/// this version can read.
const TRACEPARENT_LEN: usize = 55;

/// A W3C Trace Context `traceparent`: version, trace id, parent (span) id and flags.
///
/// [`parse`](TraceContext::parse) follows the rules of the W3C recommendation: two
/// lower-case hex digits of version (not `ff`), 32 of trace id, 16 of parent id and 2 of
/// flags, joined by `-`; neither id all zeros. Version `00` is exactly 55 characters; a
/// later version may be longer, its extra fields after a `-` at position 55, which this
/// version does not read (and does not write back: [`Display`](fmt::Display) writes the four
/// fields it knows).
///
/// ```
/// use signal_bus::signal::TraceContext;
///
/// let tc: TraceContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?;
/// assert_eq!(tc.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(tc.parent_id_hex(), "00f067aa0ba902b7");
/// assert!(tc.sampled());
/// assert_eq!(tc.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
///
/// let e = TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
///     .unwrap_err();
/// assert_eq!(
///     e.to_string(),
///     "traceparent `00-00000000000000000000000000000000-00f067aa0ba902b7-01` is invalid: \
///      the trace-id is all zeros"
/// );
/// # Ok::<(), signal_bus::SignalError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    version: u8,
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

impl TraceContext {
    /// A version `00` trace context.
    ///
    /// # Errors
    /// [`SignalError::InvalidTraceparent`] when the trace id or the parent id is all zeros
    /// (W3C: such ids are invalid).
    pub fn new(trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) -> Result<Self, SignalError> {
        let tc = TraceContext {
            version: 0,
            trace_id,
            parent_id,
            flags,
        };
        let rule = if trace_id == [0; 16] {
            Some("the trace-id is all zeros")
        } else if parent_id == [0; 8] {
            Some("the parent-id is all zeros")
        } else {
            None
        };
        match rule {
            Some(rule) => Err(invalid_traceparent(&tc.to_string(), rule.to_owned())),
            None => Ok(tc),
        }
    }

    /// Reads a `traceparent` value.
    ///
    /// # Errors
    /// [`SignalError::InvalidTraceparent`] naming the value and the first rule it breaks.
    pub fn parse(value: &str) -> Result<Self, SignalError> {
        parse(value).map_err(|rule| invalid_traceparent(value, rule))
    }

    /// The version (`0` for `00`).
    pub fn version(&self) -> u8 {
        self.version
    }
    /// The trace id: the same for every span of one trace.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }
    /// The trace id as 32 lower-case hex digits, as written in a `traceparent`.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
    /// The parent id: the id of the span that made the signal.
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }
    /// The parent id as 16 lower-case hex digits.
    pub fn parent_id_hex(&self) -> String {
        hex(&self.parent_id)
    }
    /// The trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }
    /// Whether the `sampled` flag (bit 0) is set: the caller may have recorded the trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}-{}-{}-{:02x}",
            self.version,
            hex(&self.trace_id),
            hex(&self.parent_id),
            self.flags
        )
    }
}

impl FromStr for TraceContext {
    type Err = SignalError;
    fn from_str(s: &str) -> Result<Self, SignalError> {
        TraceContext::parse(s)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

fn invalid_traceparent(value: &str, rule: String) -> SignalError {
    SignalError::InvalidTraceparent {
        value: shown_type(value),
        rule,
    }
}

/// Reads `N` bytes from `2 * N` lower-case hex digits.
fn lower_hex<const N: usize>(field: &str, text: &[u8]) -> Result<[u8; N], String> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => out[i] = hi << 4 | lo,
            _ => {
                return Err(format!(
                    "the {field} holds a character that is not a lower-case hex digit"
                ))
            }
        }
    }
    Ok(out)
}

fn parse(value: &str) -> Result<TraceContext, String> {
    let b = value.as_bytes();
    if b.len() < 2 {
        return Err("it is shorter than a version (2 hex digits)".to_owned());
    }
    let [version] = lower_hex::<1>("version", &b[..2])?;
    if version == 0xff {
        return Err("version `ff` is forbidden".to_owned());
    }
    if version == 0 && b.len() != TRACEPARENT_LEN {
        return Err(format!(
            "a version 00 traceparent is {TRACEPARENT_LEN} characters long, this one {}",
            b.len()
        ));
    }
    if b.len() < TRACEPARENT_LEN {
        return Err(format!(
            "it is {} characters long, shorter than the {TRACEPARENT_LEN} of \
             version-trace_id-parent_id-flags",
            b.len()
        ));
    }
    if b.len() > TRACEPARENT_LEN && b[TRACEPARENT_LEN] != b'-' {
        return Err(format!(
            "a later version's fields after the first {TRACEPARENT_LEN} characters must \
             start with `-`"
        ));
    }
    for at in [2, 35, 52] {
        if b[at] != b'-' {
            return Err(format!(
                "fields are separated by `-` (version-trace_id-parent_id-flags), found {:?} at \
                 position {at}",
                char::from(b[at])
            ));
        }
    }
    let trace_id = lower_hex::<16>("trace-id", &b[3..35])?;
    let parent_id = lower_hex::<8>("parent-id", &b[36..52])?;
    let [flags] = lower_hex::<1>("trace-flags", &b[53..55])?;
    if trace_id == [0; 16] {
        return Err("the trace-id is all zeros".to_owned());
    }
    if parent_id == [0; 8] {
        return Err("the parent-id is all zeros".to_owned());
    }
    Ok(TraceContext {
        version,
        trace_id,
        parent_id,
        flags,
    })
}

/// Checks a W3C `tracestate` value: a comma-separated list of at most
/// [`MAX_TRACESTATE_MEMBERS`] `key=value` list-members (empty members between commas and
/// spaces or tabs around members allowed), at most [`MAX_TRACESTATE_LEN`] bytes, no key
/// twice. A key is a simple key (a lower-case letter, then up to 255 lower-case letters,
/// digits, `_`, `-`, `*`, `/`) or a multi-tenant key `tenant@system` (a tenant of a
/// lower-case letter or digit then up to 240 of those, a system of a lower-case letter then up
/// to 13); a value is 1 to 256 printable ASCII characters other than `,` and `=`, not ending
/// with a space.
///
/// ```
/// use signal_bus::signal::validate_tracestate;
///
/// assert!(validate_tracestate("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7").is_ok());
/// let e = validate_tracestate("Congo=t61rcWkgMzE").unwrap_err();
/// assert_eq!(
///     e.to_string(),
///     "tracestate `Congo=t61rcWkgMzE` is invalid: list-member 0 has the key `Congo`: a key \
///      starts with a lower-case letter, then lower-case letters, digits, `_`, `-`, `*`, `/` \
///      (at most 256), or is `tenant@system`"
/// );
/// ```
///
/// # Errors
/// [`SignalError::InvalidTracestate`] naming the value (its first 128 bytes) and the rule.
pub fn validate_tracestate(value: &str) -> Result<(), SignalError> {
    check_tracestate(value).map_err(|rule| SignalError::InvalidTracestate {
        value: shown_type(value),
        rule,
    })
}

fn check_tracestate(value: &str) -> Result<(), String> {
    if value.len() > MAX_TRACESTATE_LEN {
        return Err(format!(
            "it is {} bytes long, more than the limit of {MAX_TRACESTATE_LEN}",
            value.len()
        ));
    }
    let mut keys: Vec<&str> = Vec::new();
    for (i, member) in value.split(',').enumerate() {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        if keys.len() == MAX_TRACESTATE_MEMBERS {
            return Err(format!(
                "it has more than {MAX_TRACESTATE_MEMBERS} list-members, the limit"
            ));
        }
        let Some((key, val)) = member.split_once('=') else {
            return Err(format!(
                "list-member {i} `{}` is not key=value",
                shown_type(member)
            ));
        };
        if !valid_key(key) {
            return Err(format!(
                "list-member {i} has the key `{}`: a key starts with a lower-case letter, \
                 then lower-case letters, digits, `_`, `-`, `*`, `/` (at most 256), or is \
                 `tenant@system`",
                shown_type(key)
            ));
        }
        if !valid_value(val) {
            return Err(format!(
                "list-member {i} (key `{key}`) has the value `{}`: a value is 1 to 256 \
                 printable ASCII characters other than `,` and `=`, not ending with a space",
                shown_type(val)
            ));
        }
        if keys.contains(&key) {
            return Err(format!("the key `{key}` appears more than once"));
        }
        keys.push(key);
    }
    Ok(())
}

fn key_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'*' | b'/')
}

fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    match key.split_once('@') {
        None => {
            !b.is_empty()
                && b.len() <= 256
                && b[0].is_ascii_lowercase()
                && b.iter().all(|&c| key_char(c))
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            !t.is_empty()
                && t.len() <= 241
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && t.iter().all(|&c| key_char(c))
                && !s.is_empty()
                && s.len() <= 14
                && s[0].is_ascii_lowercase()
                && s.iter().all(|&c| key_char(c))
        }
    }
}

fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && b[b.len() - 1] != b' '
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn rule(value: &str) -> String {
        match TraceContext::parse(value) {
            Err(SignalError::InvalidTraceparent { rule, .. }) => rule,
            other => panic!("{value}: {other:?}"),
        }
    }

    #[test]
    fn version_00_round_trips() {
        let tc = TraceContext::parse(VALID).unwrap();
        assert_eq!(tc.version(), 0);
        assert_eq!(tc.flags(), 1);
        assert_eq!(tc.to_string(), VALID);
        let unsampled = TraceContext::parse(&VALID.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled());
        let built = TraceContext::new(tc.trace_id(), tc.parent_id(), 1).unwrap();
        assert_eq!(built, tc);
    }

    #[test]
    fn each_rule_is_named() {
        assert_eq!(rule(""), "it is shorter than a version (2 hex digits)");
        assert!(rule(&VALID.replace("00-4b", "ff-4b")).contains("`ff` is forbidden"));
        assert!(rule(&format!("{VALID}-x")).contains("version 00 traceparent is 55"));
        assert!(rule(&VALID[..54]).contains("version 00 traceparent is 55"));
        assert!(rule(&VALID.replace("4bf9", "4BF9")).contains("trace-id holds"));
        assert!(rule(&VALID.replace("00f0", "00g0")).contains("parent-id holds"));
        assert!(rule(&VALID.replace("-01", "-0x")).contains("trace-flags holds"));
        assert!(rule(&VALID.replacen('-', "_", 1)).contains("found '_' at position 2"));
        assert_eq!(
            rule("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            "the trace-id is all zeros"
        );
        assert_eq!(
            rule("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            "the parent-id is all zeros"
        );
        assert!(rule(&VALID.replace("00-4b", "0G-4b")).contains("version holds"));
        assert!(TraceContext::new([0; 16], [1; 8], 0).is_err());
        assert!(TraceContext::new([1; 16], [0; 8], 0).is_err());
    }

    #[test]
    fn later_versions_are_read_as_far_as_known() {
        let v1 = VALID.replacen("00", "01", 1);
        let tc = TraceContext::parse(&format!("{v1}-what-comes-next")).unwrap();
        assert_eq!(tc.version(), 1);
        assert_eq!(tc.to_string(), v1);
        assert!(TraceContext::parse(&v1).is_ok());
        assert!(rule(&format!("{v1}x")).contains("must start with `-`"));
        assert!(rule(&v1[..40]).contains("shorter than the 55"));
    }

    #[test]
    fn tracestate_rules() {
        for ok in [
            "",
            "congo=t61rcWkgMzE",
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            " a=1 ,\tb=2 , ,",
            "tenant1@sys=x",
            "0t@s=v",
            "a=hello world",
        ] {
            assert!(validate_tracestate(ok).is_ok(), "{ok:?}");
        }
        let bad = |v: &str, needle: &str| {
            let e = validate_tracestate(v).unwrap_err().to_string();
            assert!(e.contains(needle), "{v:?}: {e}");
            assert!(e.starts_with("tracestate `"), "{e}");
        };
        bad("a", "is not key=value");
        bad("A=1", "has the key `A`");
        bad("1a=1", "has the key `1a`");
        bad("t@1s=1", "has the key `t@1s`");
        bad("t@abcdefghijklmno=1", "has the key");
        bad("a=", "has the value ``");
        bad("a=x,b=y=z", "has the value `y=z`");
        bad("a=1,a=2", "the key `a` appears more than once");
        bad("a=\u{e9}", "has the value");
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        bad(&many.join(","), "more than 32 list-members");
        assert!(validate_tracestate(&many[..32].join(",")).is_ok());
        let long: Vec<String> = (0..3)
            .map(|i| format!("k{i}={}", "x".repeat(200)))
            .collect();
        let long = long.join(",");
        bad(&long, "more than the limit of 512");
    }
}
