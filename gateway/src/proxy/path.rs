//! The one canonical request target. A request's path is made canonical
//! once, in front of the Auth API and the proxy, and every later step reads
//! that one string: the API's routing, the proxy's route lookup, the
//! plugins' request record, the access log and the upstream URI. What was
//! authorized is what the upstream receives.
//!
//! Canonical means (RFC 3986 §6.2.2):
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) decoded;
//! - the percent-encodings that remain upper-cased (`%c3%a9` → `%C3%A9`);
//! - dot segments removed (§5.2.4), encoded ones (`%2e`, `%2E`) included;
//! - repeated slashes merged (`//` → `/`); a trailing slash is kept.
//!
//! A path that cannot be made canonical without guessing how the upstream
//! would read it is refused ([`PathError`], a 400 problem): a malformed
//! percent-encoding, NUL or another control character (raw or encoded), a
//! raw backslash, path parameters (`;`, which Tomcat and Spring strip before
//! routing), dot segments that climb above the root, and dot segments hidden
//! behind an encoded slash (`/a%2F..%2Fb`). An encoded slash or backslash
//! (`%2F`, `%5C`) is never a segment separator here; whether it may pass at
//! all is the route's `escaped_slashes` (see [`check_escaped_slashes`]).
//!
//! The functions are pure, and an already canonical path (nearly every
//! request) is checked in one pass without allocating.

use std::borrow::Cow;
use std::fmt;

use axum::http::uri::PathAndQuery;
use axum::http::{Request, Uri};

use crate::config::EscapedSlashes;
use crate::error::Error;

/// Why a path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Not an absolute path (`*`, an authority-form target).
    NotAbsolute,
    /// `%` not followed by two hex digits.
    BadPercent,
    /// NUL or another control character, raw or percent-encoded.
    Control,
    /// A raw `\`, which some servers read as `/`.
    Backslash,
    /// A path parameter (`;`).
    Parameters,
    /// `..` climbing above `/`.
    AboveRoot,
    /// A `.` or `..` segment between encoded slashes.
    HiddenDotSegment,
    /// `%2F` or `%5C` on a route with `escaped_slashes = "reject"`.
    EscapedSlash,
    /// The canonical path does not make a URI again (not expected).
    Unforwardable,
}

impl PathError {
    /// The problem's `code`.
    pub fn code(self) -> &'static str {
        "invalid_path"
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the request path must start with '/'",
            PathError::BadPercent => {
                "the request path has a '%' not followed by two hexadecimal digits"
            }
            PathError::Control => "the request path contains NUL or a control character",
            PathError::Backslash => "the request path contains a backslash",
            PathError::Parameters => "the request path contains a path parameter (';')",
            PathError::AboveRoot => "the request path climbs above the root with '..'",
            PathError::HiddenDotSegment => {
                "the request path hides a dot segment behind an encoded slash"
            }
            PathError::Unforwardable => "the canonical request path is not a valid URI",
            PathError::EscapedSlash => {
                "the request path contains an encoded slash or backslash (%2F, %5C), which this route refuses"
            }
        })
    }
}

/// A canonical path, and whether it holds an encoded slash or backslash.
#[derive(Debug, PartialEq, Eq)]
pub struct Canonical<'a> {
    /// Borrowed when the request's path was canonical already.
    pub path: Cow<'a, str>,
    /// `%2F` or `%5C` occurs (for the route's `escaped_slashes`).
    pub escaped_slash: bool,
}

/// The canonical form of `raw` (a request's path, without the query), or
/// why it has none.
pub fn canonicalize(raw: &str) -> Result<Canonical<'_>, PathError> {
    let (dirty, mut escaped_slash) = scan(raw)?;
    let path = if dirty {
        let path = rebuild(raw)?;
        // A `..` may have removed the segment that held it (`/%2F/..`).
        escaped_slash = escaped_slash && (path.contains("%2F") || path.contains("%5C"));
        Cow::Owned(path)
    } else {
        Cow::Borrowed(raw)
    };
    if escaped_slash && hides_dot_segment(&path) {
        return Err(PathError::HiddenDotSegment);
    }
    Ok(Canonical {
        path,
        escaped_slash,
    })
}

/// Makes `req`'s path canonical in place (the query is kept as it came),
/// so that everything after reads the canonical path from `req.uri()`.
/// Returns whether the path holds an encoded slash. Allocates nothing when
/// the path is canonical already.
pub fn rewrite<B>(req: &mut Request<B>) -> Result<bool, PathError> {
    rewrite_if(req, |_| true).map(|done| done.unwrap_or(false))
}

/// [`rewrite`] when `take(canonical path)` says so; else `req` is left as
/// it came and the answer is `Ok(None)` (the API/proxy dispatch: only a
/// request for the proxy is rewritten there, the rest as before by the
/// router's front layer).
pub fn rewrite_if<B>(
    req: &mut Request<B>,
    take: impl FnOnce(&str) -> bool,
) -> Result<Option<bool>, PathError> {
    let canonical = canonicalize(req.uri().path())?;
    if !take(&canonical.path) {
        return Ok(None);
    }
    let escaped_slash = canonical.escaped_slash;
    if let Cow::Owned(path) = canonical.path {
        let mut parts = req.uri().clone().into_parts();
        let target = match req.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        parts.path_and_query =
            Some(PathAndQuery::try_from(target).map_err(|_| PathError::Unforwardable)?);
        *req.uri_mut() = Uri::from_parts(parts).map_err(|_| PathError::Unforwardable)?;
    }
    req.extensions_mut().insert(Rewritten { escaped_slash });
    Ok(Some(escaped_slash))
}

/// Left on a request by [`rewrite`]: its path is canonical already.
#[derive(Clone, Copy)]
struct Rewritten {
    escaped_slash: bool,
}

/// [`rewrite`], unless it ran on `req` already (the front layer in front of
/// the API/proxy dispatch): then its answer, without a second scan.
pub fn rewrite_once<B>(req: &mut Request<B>) -> Result<bool, PathError> {
    match req.extensions().get::<Rewritten>() {
        Some(done) => Ok(done.escaped_slash),
        None => rewrite(req),
    }
}

/// A route's `escaped_slashes` applied to a canonical path that holds
/// (`escaped_slash`) an encoded slash or not.
pub fn check_escaped_slashes(escaped_slash: bool, mode: EscapedSlashes) -> Result<(), PathError> {
    match mode {
        EscapedSlashes::Reject if escaped_slash => Err(PathError::EscapedSlash),
        _ => Ok(()),
    }
}

impl From<PathError> for Error {
    fn from(e: PathError) -> Self {
        Error::BadRequest {
            code: e.code(),
            field: None,
            detail: e.to_string(),
        }
    }
}

/// The host a request names, as routes match it: lower-case, without the
/// port and without a trailing dot (`Cinema.Example.:8080` → `cinema.example`).
/// A bracketed IPv6 literal keeps its brackets.
pub fn canonical_host(raw: &str) -> Option<String> {
    let host = match raw.rsplit_once(':') {
        Some((h, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']')) =>
        {
            h
        }
        _ => raw,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte a `%XY` at `bytes[i]` encodes.
fn decode_at(bytes: &[u8], i: usize) -> Result<u8, PathError> {
    match (
        bytes.get(i + 1).copied().and_then(hex),
        bytes.get(i + 2).copied().and_then(hex),
    ) {
        (Some(hi), Some(lo)) => Ok((hi << 4) | lo),
        _ => Err(PathError::BadPercent),
    }
}

/// A byte that can never be made canonical.
fn refuse_raw(b: u8) -> Result<(), PathError> {
    match b {
        b'\\' => Err(PathError::Backslash),
        b';' => Err(PathError::Parameters),
        b if is_control(b) => Err(PathError::Control),
        _ => Ok(()),
    }
}

/// One pass over `raw`: refuses what cannot be made canonical, and tells
/// whether it must be rewritten (`dirty`) and whether it holds an encoded
/// slash. Allocates nothing.
fn scan(raw: &str) -> Result<(bool, bool), PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut dirty = false;
    let mut escaped_slash = false;
    // Start of the current segment (just after its '/').
    let mut segment = 1;
    let mut i = 1;
    while i <= bytes.len() {
        let b = bytes.get(i).copied();
        match b {
            None | Some(b'/') => {
                match &bytes[segment..i] {
                    // "//" (an empty segment that is not the last one).
                    b"" => dirty |= b.is_some(),
                    b"." | b".." => dirty = true,
                    _ => {}
                }
                segment = i + 1;
                i += 1;
            }
            Some(b'%') => {
                let v = decode_at(bytes, i)?;
                if is_control(v) {
                    return Err(PathError::Control);
                }
                if is_unreserved(v) || bytes[i + 1..i + 3].iter().any(u8::is_ascii_lowercase) {
                    dirty = true;
                }
                escaped_slash |= v == b'/' || v == b'\\';
                i += 3;
            }
            Some(b) => {
                refuse_raw(b)?;
                i += 1;
            }
        }
    }
    Ok((dirty, escaped_slash))
}

/// The canonical form of `raw`, which [`scan`] found to need a rewrite.
fn rebuild(raw: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(raw.len());
    let mut segments = raw[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let start = out.len();
        out.push('/');
        push_decoded(&mut out, segment)?;
        match &out[start + 1..] {
            "" if !last => out.truncate(start),
            "." => {
                out.truncate(start);
                if last {
                    out.push('/');
                }
            }
            ".." => {
                out.truncate(start);
                let parent = out.rfind('/').ok_or(PathError::AboveRoot)?;
                out.truncate(parent);
                if last {
                    out.push('/');
                }
            }
            _ => {}
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Appends `segment` with unreserved characters decoded and the other
/// percent-encodings upper-cased.
fn push_decoded(out: &mut String, segment: &str) -> Result<(), PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = segment.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            refuse_raw(bytes[i])?;
            i += 1;
            continue;
        }
        out.push_str(&segment[run..i]);
        let v = decode_at(bytes, i)?;
        if is_control(v) {
            return Err(PathError::Control);
        }
        if is_unreserved(v) {
            out.push(char::from(v));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(v >> 4)]));
            out.push(char::from(HEX[usize::from(v & 0xf)]));
        }
        i += 3;
        run = i;
    }
    out.push_str(&segment[run..]);
    Ok(())
}

/// Whether a segment, split at its encoded slashes, has a `.` or `..` part:
/// what an upstream that decodes `%2F` would resolve.
fn hides_dot_segment(canonical: &str) -> bool {
    canonical.split('/').any(|segment| {
        segment
            .split("%2F")
            .flat_map(|part| part.split("%5C"))
            .any(|part| part == "." || part == "..")
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Hostile and ordinary paths and their canonical forms.
    const CANONICAL: &[(&str, &str)] = &[
        ("/", "/"),
        ("/films", "/films"),
        ("/films/", "/films/"),
        ("/films/premium/42", "/films/premium/42"),
        // Dot segments, raw and encoded (any case), climbing and not.
        ("/films/x/../premium/", "/films/premium/"),
        ("/films/./premium/", "/films/premium/"),
        ("/films/%2e%2e/films/18plus/", "/films/18plus/"),
        ("/films/%2E%2E/films/18plus/", "/films/18plus/"),
        ("/films/.%2E/vault/x", "/vault/x"),
        ("/films/%2e./vault/x", "/vault/x"),
        ("/films/../vault/x", "/vault/x"),
        ("/films/%2e/premium", "/films/premium"),
        ("/films/premium/.", "/films/premium/"),
        ("/films/premium/..", "/films/"),
        ("/films/..", "/"),
        ("/..a/b", "/..a/b"),
        ("/a/.../b", "/a/.../b"),
        ("/a/.b/", "/a/.b/"),
        // Repeated slashes.
        ("/films//premium/", "/films/premium/"),
        ("//films///premium//", "/films/premium/"),
        ("//", "/"),
        ("/films//../vault", "/vault"),
        // Encoded unreserved characters decoded.
        ("/films/%70remium/", "/films/premium/"),
        ("/films/%50REMIUM", "/films/PREMIUM"),
        ("/%7euser/%2D%5f", "/~user/-_"),
        ("/%41%5A%61%7A%30%39", "/AZaz09"),
        // Other encodings kept, upper-cased; '%25' is never decoded twice.
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%20b", "/a%20b"),
        ("/a%3fb", "/a%3Fb"),
        ("/100%25", "/100%25"),
        ("/%252e%252e/x", "/%252e%252e/x"),
        ("/a%3bb", "/a%3Bb"),
        // Encoded slashes are kept, never separators (the route decides).
        ("/files/a%2fb", "/files/a%2Fb"),
        ("/files/a%5cb", "/files/a%5Cb"),
        ("/films/%2F/x", "/films/%2F/x"),
        ("/%2f/..", "/"),
    ];

    /// Paths that cannot be made canonical without guessing.
    const REFUSED: &[(&str, PathError)] = &[
        ("", PathError::NotAbsolute),
        ("*", PathError::NotAbsolute),
        ("films", PathError::NotAbsolute),
        ("/a%", PathError::BadPercent),
        ("/a%2", PathError::BadPercent),
        ("/a%zz", PathError::BadPercent),
        ("/a%%32e", PathError::BadPercent),
        ("/a%00b", PathError::Control),
        ("/a%0a", PathError::Control),
        ("/a%0D%0Ax", PathError::Control),
        ("/a%7f", PathError::Control),
        ("/a\0b", PathError::Control),
        ("/a\tb", PathError::Control),
        ("/films\\..\\vault", PathError::Backslash),
        ("/films/..\\vault", PathError::Backslash),
        ("/films;jsessionid=1/premium", PathError::Parameters),
        ("/films/..;/vault", PathError::Parameters),
        ("/..", PathError::AboveRoot),
        ("/../vault", PathError::AboveRoot),
        ("/films/../../vault", PathError::AboveRoot),
        ("/%2e%2e/vault", PathError::AboveRoot),
        ("/films/x/../../../", PathError::AboveRoot),
        ("/films/..%2Fvault", PathError::HiddenDotSegment),
        ("/films/%2e%2e%2fvault", PathError::HiddenDotSegment),
        ("/films/a%2F.%2Fb", PathError::HiddenDotSegment),
        ("/films/..%5Cvault", PathError::HiddenDotSegment),
        ("/a/b%2F..", PathError::HiddenDotSegment),
    ];

    /// Every hostile path of the table has its canonical form, and a
    /// canonical path comes back borrowed (no allocation).
    #[test]
    fn hostile_paths_have_their_canonical_form() {
        for (raw, want) in CANONICAL {
            let got = canonicalize(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            assert_eq!(got.path, *want, "{raw:?}");
            assert_eq!(
                matches!(got.path, Cow::Borrowed(_)),
                raw == want,
                "{raw:?}: borrowed exactly when already canonical"
            );
        }
    }

    /// Every path of the refused table is refused, for the reason given.
    #[test]
    fn unguessable_paths_are_refused() {
        for (raw, why) in REFUSED {
            assert_eq!(canonicalize(raw), Err(*why), "{raw:?}");
        }
    }

    /// `escaped_slashes = "reject"` refuses %2F and %5C; "keep" passes them
    /// unchanged; paths without them pass either way.
    #[test]
    fn escaped_slashes_per_route() {
        let with = canonicalize("/files/a%2fb").unwrap();
        assert!(with.escaped_slash);
        assert_eq!(
            check_escaped_slashes(with.escaped_slash, EscapedSlashes::Reject),
            Err(PathError::EscapedSlash)
        );
        assert_eq!(
            check_escaped_slashes(with.escaped_slash, EscapedSlashes::Keep),
            Ok(())
        );
        assert_eq!(with.path, "/files/a%2Fb");
        assert!(canonicalize("/files/a%5Cb").unwrap().escaped_slash);
        let without = canonicalize("/files/a%20b").unwrap();
        assert!(!without.escaped_slash);
        assert_eq!(
            check_escaped_slashes(without.escaped_slash, EscapedSlashes::Reject),
            Ok(())
        );
    }

    /// Hosts match case-insensitively, without the port or a trailing dot.
    #[test]
    fn hosts() {
        for (raw, want) in [
            ("cinema.example", Some("cinema.example")),
            ("Cinema.EXAMPLE", Some("cinema.example")),
            ("cinema.example.", Some("cinema.example")),
            ("cinema.example.:8080", Some("cinema.example")),
            ("cinema.example:8080", Some("cinema.example")),
            ("[::1]:8080", Some("[::1]")),
            ("[::1]", Some("[::1]")),
            ("", None),
            (":80", None),
        ] {
            assert_eq!(canonical_host(raw).as_deref(), want, "{raw:?}");
        }
    }

    /// The rewrite puts the canonical path in the URI and keeps the query
    /// byte for byte; a canonical URI is left alone.
    #[test]
    fn rewrite_keeps_the_query() {
        let mut req = Request::new(());
        *req.uri_mut() = Uri::from_static("/films/x/../%70remium/?a=%2e%2E&b=..%2F#");
        assert_eq!(rewrite(&mut req), Ok(false));
        assert_eq!(req.uri().path(), "/films/premium/");
        assert_eq!(req.uri().query(), Some("a=%2e%2E&b=..%2F"));
        let mut abs = Request::new(());
        *abs.uri_mut() = Uri::from_static("http://cinema.example:8080//films/./1?q");
        assert_eq!(rewrite(&mut abs), Ok(false));
        assert_eq!(
            abs.uri().to_string(),
            "http://cinema.example:8080/films/1?q"
        );
        let mut bad = Request::new(());
        *bad.uri_mut() = Uri::from_static("/../etc/passwd");
        assert_eq!(rewrite(&mut bad), Err(PathError::AboveRoot));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Paths built of the pieces that make paths hostile.
        fn hostile() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    Just("/"),
                    Just("."),
                    Just(".."),
                    Just("%2e"),
                    Just("%2E"),
                    Just("%2f"),
                    Just("%2F"),
                    Just("%5c"),
                    Just("%41"),
                    Just("%7e"),
                    Just("%25"),
                    Just("%c3%a9"),
                    Just("%"),
                    Just("2"),
                    Just("e"),
                    Just("a"),
                    Just("Z"),
                    Just("~"),
                    Just("-"),
                    Just(";"),
                    Just("\\"),
                    Just("%00"),
                    Just("é"),
                ],
                0..24,
            )
            .prop_map(|pieces| format!("/{}", pieces.concat()))
        }

        /// Whether `path` holds a percent-encoded unreserved character.
        fn encodes_unreserved(path: &str) -> bool {
            let b = path.as_bytes();
            (0..b.len()).any(|i| b[i] == b'%' && decode_at(b, i).is_ok_and(is_unreserved))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            /// Canonicalization never panics; its output is canonical again
            /// unchanged (and borrowed), and never holds `//`, `/./`, `/../`,
            /// a final `/.` or `/..`, or an encoded unreserved character.
            #[test]
            fn idempotent_and_clean(raw in hostile()) {
                if let Ok(once) = canonicalize(&raw) {
                    let path = once.path.as_ref();
                    prop_assert!(path.starts_with('/'), "{path:?}");
                    for bad in ["//", "/./", "/../"] {
                        prop_assert!(!path.contains(bad), "{raw:?} -> {path:?}");
                    }
                    prop_assert!(!path.ends_with("/.") && !path.ends_with("/.."), "{path:?}");
                    prop_assert!(!encodes_unreserved(path), "{raw:?} -> {path:?}");
                    let twice = canonicalize(path).expect("canonical output is accepted");
                    prop_assert_eq!(&twice.path, path);
                    prop_assert!(matches!(twice.path, Cow::Borrowed(_)), "{path:?} reallocated");
                    prop_assert_eq!(twice.escaped_slash, once.escaped_slash);
                }
            }

            /// Arbitrary strings never panic the canonicalizer.
            #[test]
            fn never_panics(raw in ".*") {
                let _ = canonicalize(&raw);
                let _ = canonicalize(&format!("/{raw}"));
            }
        }
    }
}
