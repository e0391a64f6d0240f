//! Signal types and bus patterns as NATS subjects.

use crate::pattern::{Pattern, Segment};

/// The subject a signal of type `ty` is published to: `<prefix>.<type>`.
///
/// Signal types are dot-separated `[A-Za-z0-9_-]+` segments, so every type is a valid run of
/// NATS subject tokens.
pub fn subject_for(prefix: &str, ty: &str) -> String {
    let mut subject = String::with_capacity(prefix.len() + 1 + ty.len());
    subject.push_str(prefix);
    subject.push('.');
    subject.push_str(ty);
    subject
}

/// Checks a subject prefix: dot-separated tokens, none empty, with no whitespace, control
/// characters or NATS wildcards (`*`, `>`).
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() {
        return Err("it must not be empty");
    }
    if prefix.len() > 255 {
        return Err("it must be at most 255 bytes");
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
    /// The subjects for `pattern` under `prefix`.
    pub fn new(prefix: &str, pattern: &Pattern) -> SubjectFilter {
        let segments = pattern.segments();
        let mut tokens: Vec<&str> = Vec::with_capacity(segments.len() + 1);
        let mut exact = true;
        let join = |tokens: &[&str]| {
            let mut s = prefix.to_owned();
            for t in tokens {
                s.push('.');
                s.push_str(t);
            }
            s
        };
        for (i, segment) in segments.iter().enumerate() {
            match segment {
                Segment::Literal(lit) => tokens.push(lit),
                Segment::Star => tokens.push("*"),
                Segment::Glob(_) => {
                    tokens.push("*");
                    exact = false;
                }
                Segment::GlobStar => {
                    let last = i + 1 == segments.len();
                    let mut subjects = Vec::with_capacity(2);
                    if last && !tokens.is_empty() {
                        // `a.**` matches `a` itself too.
                        subjects.push(join(&tokens));
                    }
                    tokens.push(">");
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

    #[test]
    fn prefixes() {
        assert!(validate_prefix("signals").is_ok());
        assert!(validate_prefix("acme.prod-1").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "a\nb"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
