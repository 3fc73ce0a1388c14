//! RFC 6238 time-based one-time passwords, as every authenticator app
//! (Google Authenticator, Authy, 1Password...) computes them: HMAC-SHA-1,
//! 6 digits, 30-second steps, on aws-lc-rs's HMAC. A code is accepted for
//! the current step and one step either side (clock drift), and only for a
//! step later than the last one accepted (RFC 6238 §5.2: never twice).

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;

/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Seconds per time step.
pub const PERIOD: u64 = 30;
/// Bytes of a new secret: 160 bits, RFC 4226's recommended length.
pub const SECRET_LEN: usize = 20;
/// Steps accepted either side of the current one.
pub const DRIFT_STEPS: u64 = 1;

/// The time step of a Unix time.
pub fn step_at(unix_seconds: u64) -> u64 {
    unix_seconds / PERIOD
}

/// RFC 4226's HOTP of `counter`: HMAC, dynamic truncation, `digits` digits.
pub(crate) fn hotp(alg: hmac::Algorithm, secret: &[u8], counter: u64, digits: u32) -> String {
    let value = hotp_value(&hmac::Key::new(alg, secret), counter, digits);
    format!("{value:0width$}", width = digits as usize)
}

/// The HOTP value of `counter` under `key`, as a number.
fn hotp_value(key: &hmac::Key, counter: u64, digits: u32) -> u32 {
    let mac = hmac::sign(key, &counter.to_be_bytes());
    let mac = mac.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]);
    binary % 10u32.pow(digits)
}

/// The code of `secret` for time step `step`.
pub fn code(secret: &[u8], step: u64) -> String {
    hotp(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret, step, DIGITS)
}

/// A presented code without the spaces an app shows (`123 456`); None
/// unless it is then exactly six ASCII digits.
pub fn normalize(presented: &str) -> Option<String> {
    if presented.len() > 16 {
        return None;
    }
    let digits: String = presented.chars().filter(|c| *c != ' ').collect();
    (digits.len() == DIGITS as usize && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(digits)
}

/// The step, within [`DRIFT_STEPS`] of `now_step` and later than
/// `last_step`, whose code `presented` is; None if there is none. Every
/// candidate is compared in constant time.
pub fn verify(
    secret: &[u8],
    presented: &str,
    now_step: u64,
    last_step: Option<u64>,
) -> Option<u64> {
    let presented: u32 = normalize(presented)?.parse().ok()?;
    // One key for the window's three HMACs; numbers compared in constant time.
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mut matched = None;
    for step in now_step.saturating_sub(DRIFT_STEPS)..=now_step.saturating_add(DRIFT_STEPS) {
        let fresh = last_step.is_none_or(|last| step > last);
        let value = hotp_value(&key, step, DIGITS);
        let equal = verify_slices_are_equal(&value.to_be_bytes(), &presented.to_be_bytes()).is_ok();
        if equal && fresh && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// The `otpauth://` URI an authenticator app scans (Google's key URI
/// format): the label is `issuer:account`, both percent-encoded.
pub fn otpauth_uri(issuer: &str, account: &str, secret_base32: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    format!(
        "otpauth://totp/{}:{}?secret={secret_base32}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={PERIOD}",
        enc(issuer),
        enc(account),
        enc(issuer),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B: every test vector, for SHA-1, SHA-256 and
    /// SHA-512 (8 digits; the secrets are the RFC's ASCII seeds).
    #[test]
    fn rfc_6238_test_vectors() {
        let sha1 = b"12345678901234567890".as_slice();
        let sha256 = b"12345678901234567890123456789012".as_slice();
        let sha512 = b"1234567890123456789012345678901234567890123456789012345678901234".as_slice();
        let vectors: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1_111_111_109, "07081804", "68084774", "25091201"),
            (1_111_111_111, "14050471", "67062674", "99943326"),
            (1_234_567_890, "89005924", "91819424", "93441116"),
            (2_000_000_000, "69279037", "90698825", "38618901"),
            (20_000_000_000, "65353130", "77737706", "47863826"),
        ];
        for (time, want1, want256, want512) in vectors {
            let step = step_at(time);
            assert_eq!(
                hotp(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, sha1, step, 8),
                want1,
                "SHA-1 at {time}"
            );
            assert_eq!(
                hotp(hmac::HMAC_SHA256, sha256, step, 8),
                want256,
                "SHA-256 at {time}"
            );
            assert_eq!(
                hotp(hmac::HMAC_SHA512, sha512, step, 8),
                want512,
                "SHA-512 at {time}"
            );
        }
    }

    /// RFC 4226 Appendix D: the HOTP values of counters 0-9 (6 digits).
    #[test]
    fn rfc_4226_test_vectors() {
        let want = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, want) in want.iter().enumerate() {
            assert_eq!(
                code(b"12345678901234567890", counter as u64),
                *want,
                "counter {counter}"
            );
        }
    }

    /// One step of drift either way is accepted, two are not; a step at or
    /// before the last accepted one never is.
    #[test]
    fn drift_and_replay() {
        let secret = b"12345678901234567890";
        let now = 1000;
        for (step, ok) in [
            (now - 2, false),
            (now - 1, true),
            (now, true),
            (now + 1, true),
            (now + 2, false),
        ] {
            assert_eq!(
                verify(secret, &code(secret, step), now, None),
                ok.then_some(step),
                "step {step}"
            );
        }
        assert_eq!(
            verify(secret, &code(secret, now), now, Some(now)),
            None,
            "replay"
        );
        assert_eq!(
            verify(secret, &code(secret, now - 1), now, Some(now - 1)),
            None,
            "older"
        );
        assert_eq!(
            verify(secret, &code(secret, now + 1), now, Some(now)),
            Some(now + 1)
        );
    }

    /// Only six digits, spaces aside, are a code.
    #[test]
    fn malformed_codes_are_refused() {
        let secret = b"12345678901234567890";
        let good = code(secret, 7);
        let spaced = format!("{} {}", &good[..3], &good[3..]);
        assert_eq!(verify(secret, &spaced, 7, None), Some(7));
        for bad in [
            "",
            "12345",
            "1234567",
            "12345a",
            "１２３４５６",
            "123456\0",
            "-12345",
            &"1".repeat(10_000),
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
    }

    /// The URI carries the parameters authenticator apps read, and a label
    /// with `:`, `&`, spaces or non-ASCII cannot inject parameters.
    #[test]
    fn otpauth_uri_is_escaped() {
        let uri = otpauth_uri("Cinema & Co", "al:ice?secret=X", "JBSWY3DPEHPK3PXP");
        assert_eq!(
            uri,
            "otpauth://totp/Cinema%20%26%20Co:al%3Aice%3Fsecret%3DX?secret=JBSWY3DPEHPK3PXP&issuer=Cinema%20%26%20Co&algorithm=SHA1&digits=6&period=30"
        );
    }
}
