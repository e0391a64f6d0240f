//! Webhook signatures: each verifier in `signal_bus::http::signing` (Standard Webhooks,
//! GitHub, Stripe-style, Jido) takes any headers and body without panicking, and a signature
//! its own `sign` made for the same body verifies, alone and on top of the received headers.

use http::{HeaderMap, HeaderName, HeaderValue};
use signal_bus::http::signing::{
    GitHub, JidoCompat, SignInput, SigningScheme, StandardWebhooks, StripeStyle, VerifyError,
};

use super::{first_line, split_message, MAX_INPUT};

/// Used when the input's secret is not one the scheme accepts.
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET: &str = "It's a Secret to Everybody";
/// Used when the input's time is not an integer.
const DEFAULT_NOW: i64 = 1_700_000_000;

/// The schemes, in the order of [`verdicts`].
pub const SCHEMES: [&str; 4] = ["standard-webhooks", "github", "stripe", "jido"];

/// Input: the secret (first line; any scheme refusing it uses a fixed one), the time of
/// verification in unix seconds (second line), then `name: value` header lines, an empty
/// line, and the body.
pub fn check(data: &[u8]) {
    let _ = verdicts(data);
}

/// What each scheme (in [`SCHEMES`] order) says of the input's headers and body, after the
/// checks of [`check`]; `None` when the input is too long to look at.
pub fn verdicts(data: &[u8]) -> Option<Vec<Result<(), VerifyError>>> {
    if data.len() > MAX_INPUT {
        return None;
    }
    let (secret, rest) = first_line(data);
    let (now, message) = first_line(rest);
    let now = std::str::from_utf8(now)
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok())
        .unwrap_or(DEFAULT_NOW);
    let (pairs, body) = split_message(message);
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }

    let text = String::from_utf8_lossy(secret);
    let standard = StandardWebhooks::new(&*text)
        .unwrap_or_else(|_| StandardWebhooks::new(STANDARD_SECRET).expect("a valid secret"));
    let github = GitHub::new(secret).unwrap_or_else(|_| GitHub::new(SECRET).expect("a secret"));
    let stripe =
        StripeStyle::new(secret).unwrap_or_else(|_| StripeStyle::new(SECRET).expect("a secret"));
    let jido =
        JidoCompat::new(secret).unwrap_or_else(|_| JidoCompat::new(SECRET).expect("a secret"));

    let verdicts = vec![
        standard.verify_at(&headers, body, now),
        github.verify(&headers, body),
        stripe.verify_at(&headers, body, now),
        jido.verify_at(&headers, body, now),
    ];

    // The id a Standard Webhooks sender would use: the received one when it is valid.
    let msg_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| StandardWebhooks::validate_msg_id(id).is_ok())
        .unwrap_or("msg_fuzz");
    let input = SignInput::new(msg_id, now, body, "fuzz.event");

    // The inherent signers, each verified alone.
    let mut alone = HeaderMap::new();
    alone.insert(
        "webhook-id",
        HeaderValue::from_str(msg_id).expect("a valid id"),
    );
    alone.insert("webhook-timestamp", HeaderValue::from(now));
    alone.insert(
        "webhook-signature",
        value(&standard.sign(msg_id, now, body)),
    );
    assert_eq!(
        standard.verify_at(&alone, body, now),
        Ok(()),
        "standard-webhooks"
    );
    let mut alone = HeaderMap::new();
    alone.insert("x-hub-signature-256", value(&github.sign(body)));
    assert_eq!(github.verify(&alone, body), Ok(()), "github");
    let mut alone = HeaderMap::new();
    alone.insert("stripe-signature", value(&stripe.sign(now, body)));
    assert_eq!(stripe.verify_at(&alone, body, now), Ok(()), "stripe");
    let mut alone = HeaderMap::new();
    alone.insert("x-webhook-signature", value(&jido.sign(now, body)));
    alone.insert("x-webhook-timestamp", HeaderValue::from(now));
    assert_eq!(jido.verify_at(&alone, body, now), Ok(()), "jido");

    // Through the trait, the signed headers on top of the received ones (as a sender's
    // signing headers win over caller-supplied ones).
    let verify = |name: &str, headers: &HeaderMap, body: &[u8]| match name {
        "standard-webhooks" => standard.verify_at(headers, body, now),
        "github" => github.verify(headers, body),
        "stripe" => stripe.verify_at(headers, body, now),
        _ => jido.verify_at(headers, body, now),
    };
    let schemes: [&dyn SigningScheme; 4] = [&standard, &github, &stripe, &jido];
    for scheme in schemes {
        let name = scheme.name();
        let mut signed = headers.clone();
        for (header, value) in scheme.sign_headers(&input) {
            signed.insert(header, value);
        }
        assert_eq!(
            verify(name, &signed, body),
            Ok(()),
            "{name} over the received headers"
        );
        // A different body never verifies.
        let mut other = body.to_vec();
        other.push(b'!');
        assert!(
            verify(name, &signed, &other).is_err(),
            "{name} verified another body"
        );
    }
    Some(verdicts)
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("signatures are visible ASCII")
}
