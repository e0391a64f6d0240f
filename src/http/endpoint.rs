use std::{fmt, net::IpAddr};

use reqwest::Url;

use super::egress;
use crate::ConfigError;

/// A validated HTTP(S) URL. Displays without its query string, which may carry secrets.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    url: Url,
    shown: String,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// What a URL looks like in messages: scheme, host, port and path; never user info or the
/// query, which may carry credentials.
///
/// In a URL that parses, user info holds no raw `/`, `?` or `#`, so it ends at the last `@`
/// before the path. Text that does not parse may be a URL whose password holds them
/// (`https://svc:pa/ss@host`): there everything up to the last `@` after the scheme is
/// hidden, which may hide more than the user info, never less.
fn redacted(raw: &str) -> String {
    let start = raw.find("://").map_or(0, |i| i + 3);
    let mut base = raw.to_owned();
    let mut host_at = start;
    let user_info_end = if Url::parse(raw).is_ok() {
        let end = raw[start..]
            .find(['/', '?', '#'])
            .map_or(raw.len(), |i| start + i);
        raw[start..end].rfind('@')
    } else {
        raw[start..].rfind('@')
    };
    if let Some(at) = user_info_end {
        base.replace_range(start..start + at + 1, "***@");
        host_at = start + "***@".len();
    }
    let cut = base[host_at..]
        .find(['?', '#'])
        .map_or(base.len(), |i| host_at + i);
    let mut shown: String = base[..cut].chars().take(200).collect();
    if cut < base.len() {
        shown.push_str("?…");
    }
    shown
}

impl Endpoint {
    /// Parses and checks a URL: http or https, a host, no user info, no whitespace.
    pub(crate) fn parse(raw: &str) -> Result<Endpoint, ConfigError> {
        let invalid = |rule: &str| ConfigError::invalid("url", redacted(raw), rule);
        if raw.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("must not contain whitespace or control characters"));
        }
        if !raw.contains("://") {
            // `localhost:8080/events` parses as a URL of scheme `localhost`; say what is
            // really wrong.
            // Redacted as the URL it was meant to be (user info and query hidden).
            let shown = redacted(&format!("http://{raw}"))["http://".len()..].to_owned();
            let rule = format!("has no scheme: write it as `http://{shown}` or `https://{shown}`");
            return Err(ConfigError::invalid("url", shown, rule));
        }
        let url = Url::parse(raw).map_err(|e| invalid(&format!("is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(&format!(
                "has scheme `{}`: only http and https are allowed",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "must not contain user info: pass credentials in a header",
            ));
        }
        let shown = redacted(url.as_str());
        Ok(Endpoint { url, shown })
    }

    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    /// The literal IP address of the host, if the URL has one.
    pub(crate) fn literal_ip(&self) -> Option<IpAddr> {
        match self.url.host()? {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(_) => None,
        }
    }

    /// Refuses a literal address in one of the IANA special-purpose ranges the egress guard
    /// refuses (private, loopback, link-local, documentation, benchmarking, 6to4, ...),
    /// naming the range, its RFC and why.
    pub(crate) fn check_literal_ip(&self) -> Result<(), ConfigError> {
        if let Some(ip) = self.literal_ip() {
            if let Err(refusal) = egress::check(ip) {
                return Err(ConfigError::invalid(
                    "url",
                    &self.shown,
                    format!(
                        "points to {ip}, {refusal}; webhooks refuse these unless \
                         allow_private_networks(true)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Refuses a host name that is local by definition (`localhost` and names under
    /// `.localhost`, RFC 6761), for clients whose DNS answers the guard cannot see.
    pub(crate) fn check_local_name(&self) -> Result<(), ConfigError> {
        if let Some(url::Host::Domain(name)) = self.url.host() {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                return Err(ConfigError::invalid(
                    "url",
                    &self.shown,
                    format!(
                        "names `{name}`, a loopback name (RFC 6761); webhooks refuse it unless \
                         allow_private_networks(true)"
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn host_port(&self) -> (String, u16) {
        let host = match self.url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => self.url.host_str().unwrap_or_default().to_owned(),
        };
        (host, self.url.port_or_known_default().unwrap_or(80))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_urls() {
        let e = Endpoint::parse("https://api.example.com/events?token=s3cret").unwrap();
        assert_eq!(e.to_string(), "https://api.example.com/events?…");
        assert!(!format!("{e:?}").contains("s3cret"));
        assert_eq!(e.host_port(), ("api.example.com".to_owned(), 443));
        let e = Endpoint::parse("http://[::1]:8080/x").unwrap();
        assert_eq!(e.host_port(), ("::1".to_owned(), 8080));
    }

    /// A password holding `/`, `?` or `#` makes the URL unparseable; the error must still
    /// hide it, whole (found in review: the first `/` or `?` used to end the user info).
    #[test]
    fn a_password_with_url_delimiters_never_shows() {
        for (raw, password) in [
            ("https://svc:pa/ss@api.example.com/in", "pa/ss"),
            ("https://svc:p?w0rd@api.example.com/in", "p?w0rd"),
            ("https://svc:p#w0rd@api.example.com/in", "p#w0rd"),
            ("svc:tok/en@api.example.com/in", "tok/en"),
            ("https://svc:s3cr3t@api.example.com/in", "s3cr3t"),
        ] {
            let e = Endpoint::parse(raw).unwrap_err();
            for text in [e.to_string(), format!("{e:?}")] {
                let (first, rest) = password.split_at(2);
                assert!(
                    !text.contains(password) && !text.contains(rest) && !text.contains(first),
                    "{raw}: {text}"
                );
                assert!(text.contains("api.example.com"), "{raw}: {text}");
            }
        }
        // A valid URL with `@` in its query keeps its host in messages.
        assert_eq!(
            redacted("https://api.example.com/p?to=a@b.example"),
            "https://api.example.com/p?…"
        );
    }

    #[test]
    fn bad_urls_are_refused_with_the_rule() {
        let cases = [
            ("", "must not be empty"),
            (
                "ftp://example.com/x",
                "has scheme `ftp`: only http and https are allowed",
            ),
            ("https://user:pw@example.com/", "must not contain user info"),
            ("https://exa mple.com/", "must not contain whitespace"),
            ("not a url", "must not contain whitespace"),
            (
                "example.com/x",
                "has no scheme: write it as `http://example.com/x` or `https://example.com/x`",
            ),
            ("http://:80/", "is not a URL: empty host"),
        ];
        for (raw, rule) in cases {
            let e = Endpoint::parse(raw).unwrap_err().to_string();
            assert!(e.starts_with("invalid url `"), "{raw}: {e}");
            assert!(e.contains(rule), "{raw}: {e}");
            assert!(!e.contains("pw@"), "user info leaked: {e}");
        }
    }

    #[test]
    fn a_missing_scheme_is_named_with_the_value() {
        let e = Endpoint::parse("localhost:8080/events").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid url `localhost:8080/events`: has no scheme: write it as \
             `http://localhost:8080/events` or `https://localhost:8080/events`"
        );
        // The query (which may hold a token) stays out of the message.
        let e = Endpoint::parse("api.example.com/in?token=s3cret")
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no scheme"), "{e}");
        assert!(!e.contains("s3cret"), "the query leaked: {e}");
        let e = Endpoint::parse("user:pw@api.example.com/in")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`***@api.example.com/in`"), "{e}");
        assert!(!e.contains("pw@"), "user info leaked: {e}");
    }
}
