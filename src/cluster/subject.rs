//! Signal types and bus patterns as NATS subjects.

use crate::pattern::{Pattern, Segment};

/// The subject a signal of type `ty` is published to: `<prefix>.<type>`, each segment of the
/// type one subject token.
///
/// A type holds no whitespace and no empty segment, so it is a valid run of NATS tokens but
/// for two things NATS reads as syntax, which are escaped (percent-encoding, reversible):
/// a segment that is exactly `*` or `>` (a NATS wildcard) becomes `%2A` or `%3E`, and every
/// `%` becomes `%25`. Every other character stays as it is, so types of letters, digits,
/// `_`, `-`, `/`, `:`, `+`, `@`, `~`, `#` and the like keep their subject as written.
///
/// ```
/// use signal_bus::cluster::subject_for;
///
/// assert_eq!(subject_for("signals", "user.created"), "signals.user.created");
/// assert_eq!(subject_for("signals", "com.example/orders:created"), "signals.com.example/orders:created");
/// assert_eq!(subject_for("signals", "a.*.>.b*.100%"), "signals.a.%2A.%3E.b*.100%25");
/// ```
pub fn subject_for(prefix: &str, ty: &str) -> String {
    let mut subject = String::with_capacity(prefix.len() + 1 + ty.len());
    subject.push_str(prefix);
    if !needs_escape(ty) {
        subject.push('.');
        subject.push_str(ty);
        return subject;
    }
    for segment in ty.split('.') {
        subject.push('.');
        push_token(&mut subject, segment);
    }
    subject
}

/// Whether `subject` is the subject [`subject_for`] gives `ty` under `prefix`.
pub(crate) fn is_subject_for(subject: &str, prefix: &str, ty: &str) -> bool {
    if needs_escape(ty) {
        return subject == subject_for(prefix, ty);
    }
    subject.len() == prefix.len() + 1 + ty.len()
        && subject.starts_with(prefix)
        && subject.as_bytes()[prefix.len()] == b'.'
        && subject.ends_with(ty)
}

/// Whether some segment of `ty` is written otherwise as a subject token.
fn needs_escape(ty: &str) -> bool {
    ty.contains('%') || ty.split('.').any(|s| s == "*" || s == ">")
}

/// Appends a type segment (or a pattern's literal segment) as a subject token.
fn push_token(out: &mut String, segment: &str) {
    match segment {
        "*" => out.push_str("%2A"),
        ">" => out.push_str("%3E"),
        _ => {
            for part in segment.split_inclusive('%') {
                match part.strip_suffix('%') {
                    Some(head) => {
                        out.push_str(head);
                        out.push_str("%25");
                    }
                    None => out.push_str(part),
                }
            }
        }
    }
}

/// Checks a subject prefix: dot-separated tokens, none empty, with no whitespace, control
/// characters or NATS wildcards (`*`, `>`), and not under `_INBOX` (where NATS clients get
/// their replies).
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() {
        return Err("it must not be empty");
    }
    if prefix.len() > 255 {
        return Err("it must be at most 255 bytes");
    }
    if prefix.split('.').next() == Some("_INBOX") {
        return Err("it must not start with `_INBOX` (NATS reply subjects)");
    }
    for token in prefix.split('.') {
        if token.is_empty() {
            return Err("it must not have an empty token (a leading, trailing or double `.`)");
        }
        if token
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '*' || c == '>')
        {
            return Err("it must not contain whitespace, control characters, `*` or `>`");
        }
    }
    Ok(())
}

/// The NATS subjects a bridge subscribes to for a bus pattern.
///
/// `*` stays `*`; a trailing `**` becomes `>` (with the subject before it as well, since
/// `**` also matches zero segments); what NATS cannot express (glob segments, `**` before
/// other segments) becomes a wider subscription, and the bridge filters locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectFilter {
    subjects: Vec<String>,
    exact: bool,
}

impl SubjectFilter {
    /// The subjects for `pattern` under `prefix`. A literal segment becomes the token
    /// [`subject_for`] writes for it (an escaped `\*` in the pattern is the token `%2A`).
    pub fn new(prefix: &str, pattern: &Pattern) -> SubjectFilter {
        let segments = pattern.segments();
        let mut tokens: Vec<String> = Vec::with_capacity(segments.len() + 1);
        let mut exact = true;
        let join = |tokens: &[String]| {
            let mut s = prefix.to_owned();
            for t in tokens {
                s.push('.');
                s.push_str(t);
            }
            s
        };
        for (i, segment) in segments.iter().enumerate() {
            match segment {
                Segment::Literal(lit) => {
                    let mut token = String::with_capacity(lit.len());
                    push_token(&mut token, lit);
                    tokens.push(token);
                }
                Segment::Star => tokens.push("*".to_owned()),
                Segment::Glob(_) => {
                    tokens.push("*".to_owned());
                    exact = false;
                }
                Segment::GlobStar => {
                    let last = i + 1 == segments.len();
                    let mut subjects = Vec::with_capacity(2);
                    if last && !tokens.is_empty() {
                        // `a.**` matches `a` itself too.
                        subjects.push(join(&tokens));
                    }
                    tokens.push(">".to_owned());
                    subjects.push(join(&tokens));
                    return SubjectFilter {
                        subjects,
                        exact: exact && last,
                    };
                }
            }
        }
        SubjectFilter {
            subjects: vec![join(&tokens)],
            exact,
        }
    }

    /// The subjects, whose union receives every signal the pattern matches.
    pub fn subjects(&self) -> &[String] {
        &self.subjects
    }

    /// Whether the subjects receive exactly what the pattern matches (no local filtering
    /// needed). The bridge checks every signal against the pattern anyway.
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// One subject that receives everything the pattern matches, for a JetStream consumer
    /// (one filter subject per consumer on NATS 2.9): the only subject, or for `a.b.**`
    /// (`a.b` and `a.b.>`) the wider `a.>`.
    pub fn single(&self) -> String {
        match self.subjects.as_slice() {
            [one] => one.clone(),
            [bare, _] => match bare.rsplit_once('.') {
                Some((parent, _)) => format!("{parent}.>"),
                None => format!("{bare}.>"),
            },
            _ => unreachable!("a filter has one or two subjects"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(p: &str) -> SubjectFilter {
        SubjectFilter::new("signals", &Pattern::parse(p).unwrap())
    }

    #[test]
    fn translates_patterns() {
        let cases: &[(&str, &[&str], bool, &str)] = &[
            (
                "user.created",
                &["signals.user.created"],
                true,
                "signals.user.created",
            ),
            ("user.*", &["signals.user.*"], true, "signals.user.*"),
            ("**", &["signals.>"], true, "signals.>"),
            (
                "audit.**",
                &["signals.audit", "signals.audit.>"],
                true,
                "signals.>",
            ),
            (
                "a.*.**",
                &["signals.a.*", "signals.a.*.>"],
                true,
                "signals.a.>",
            ),
            ("a.**.e", &["signals.a.>"], false, "signals.a.>"),
            ("**.e", &["signals.>"], false, "signals.>"),
            ("user.create*", &["signals.user.*"], false, "signals.user.*"),
            ("{a,b}.x", &["signals.*.x"], false, "signals.*.x"),
            (
                "com.example/orders:created",
                &["signals.com.example/orders:created"],
                true,
                "signals.com.example/orders:created",
            ),
            (r"a.\*.>", &["signals.a.%2A.%3E"], true, "signals.a.%2A.%3E"),
            (r"a.b\*.%", &["signals.a.b*.%25"], true, "signals.a.b*.%25"),
            (
                r"\*.**",
                &["signals.%2A", "signals.%2A.>"],
                true,
                "signals.>",
            ),
            (r"x\*y*", &["signals.*"], false, "signals.*"),
        ];
        for (pattern, subjects, exact, single) in cases {
            let f = filter(pattern);
            assert_eq!(f.subjects(), *subjects, "{pattern}");
            assert_eq!(f.is_exact(), *exact, "{pattern}");
            assert_eq!(f.single(), *single, "{pattern}");
        }
        assert_eq!(
            SubjectFilter::new("a.b", &Pattern::parse("x.**").unwrap()).single(),
            "a.b.>"
        );
    }

    /// A subject as NATS matches it against a subscription.
    fn nats_matches(sub: &str, subject: &str) -> bool {
        let (s, t): (Vec<&str>, Vec<&str>) =
            (sub.split('.').collect(), subject.split('.').collect());
        for (i, tok) in s.iter().enumerate() {
            match *tok {
                ">" => return t.len() > i,
                "*" if i < t.len() => {}
                lit if i < t.len() && t[i] == lit => {}
                _ => return false,
            }
        }
        s.len() == t.len()
    }

    #[test]
    fn subscriptions_cover_every_match() {
        let types = [
            "a",
            "a.b",
            "a.b.c",
            "a.e",
            "a.x.e",
            "audit",
            "audit.x.y",
            "user.created",
            "user.create_x",
            "b.x",
            "q.e",
            "com.example/orders:created",
            "a.*",
            "a.>",
            "a.%2A",
            "a.%",
            "*",
            ">",
            "a.b*",
            "x*y",
            "x*yz",
            "a.*.>",
            "%.*",
        ];
        let patterns = [
            "a",
            "a.*",
            "a.**",
            "a.**.e",
            "**.e",
            "**",
            "audit.**",
            "user.create*",
            "{a,b}.x",
            "a.*.**",
            "com.example/orders:created",
            "com.*",
            r"a.\*",
            "a.>",
            r"a.%2A",
            "a.%",
            r"\*",
            r"\*.**",
            r"a.\*.**",
            r"x\*y*",
            r"a.b\*",
            "%.*",
        ];
        for p in patterns {
            let f = filter(p);
            let pattern = Pattern::parse(p).unwrap();
            for ty in types {
                let subject = subject_for("signals", ty);
                let any = f.subjects().iter().any(|s| nats_matches(s, &subject));
                let single = nats_matches(&f.single(), &subject);
                if pattern.matches(ty) {
                    assert!(any && single, "{p} must receive {ty}");
                } else if f.is_exact() {
                    assert!(!any, "{p} is exact but receives {ty}");
                }
            }
        }
    }

    /// The type back from a subject [`subject_for`] wrote.
    fn type_of(prefix: &str, subject: &str) -> String {
        let rest = subject
            .strip_prefix(prefix)
            .unwrap()
            .strip_prefix('.')
            .unwrap();
        let decoded: Vec<String> = rest
            .split('.')
            .map(|t| {
                crate::binding::decode_value(t)
                    .expect("valid percent-encoding")
                    .into_owned()
            })
            .collect();
        decoded.join(".")
    }

    #[test]
    fn subjects_are_valid_nats_literals_and_reversible() {
        for ty in [
            "user.created",
            "com.example/orders:created",
            "a.*.>.b",
            "*",
            ">",
            "a.**.>>.*>",
            "100%.%2A.%25%",
            "x+y@z~w.#.$.caf\u{e9}",
            "a.%3E",
        ] {
            let subject = subject_for("signals", ty);
            // A literal subject: no whitespace, no empty token, no wildcard token.
            assert!(!subject.contains(char::is_whitespace), "{subject}");
            for token in subject.split('.') {
                assert!(
                    !token.is_empty() && token != "*" && token != ">",
                    "{subject}"
                );
            }
            assert_eq!(type_of("signals", &subject), ty, "{subject}");
            assert!(is_subject_for(&subject, "signals", ty), "{subject}");
            assert!(!is_subject_for(&format!("{subject}.x"), "signals", ty));
            // The pattern naming the type exactly subscribes to exactly its subject.
            let exact = Pattern::parse(&crate::pattern::escape(ty)).unwrap();
            let f = SubjectFilter::new("signals", &exact);
            assert_eq!(f.subjects(), std::slice::from_ref(&subject), "{ty}");
            assert!(f.is_exact());
        }
        // Types that differ get subjects that differ.
        assert_ne!(subject_for("p", "a.*"), subject_for("p", "a.%2A"));
        assert_ne!(subject_for("p", "a.%"), subject_for("p", "a.%25"));
        assert!(!is_subject_for("p.a.*", "p", "a.*"));
    }

    #[test]
    fn prefixes() {
        assert!(validate_prefix("signals").is_ok());
        assert!(validate_prefix("acme.prod-1").is_ok());
        assert!(validate_prefix("my_INBOX.x").is_ok());
        for bad in [
            "", "a..b", ".a", "a.", "a b", "a.*", "a.>", "a\nb", "_INBOX", "_INBOX.a",
        ] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
