//! Request path normalisation, so that routing and the backend see the same
//! path and a rule on `/admin` cannot be bypassed with `/public/../admin`,
//! `//admin` or `/%61dmin`.
//!
//! What it does, in one pass (RFC 3986 sections 2.3, 6.2.2 and 5.2.4):
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded, other escapes get uppercase hex digits;
//! - encoded slashes (`%2F`, `%5C`) are rejected, kept, or decoded as the
//!   caller chooses ([`EncodedSlashes`]);
//! - runs of slashes become one;
//! - `.` and `..` segments are resolved (`..` never climbs above the root).
//!
//! The result is idempotent: normalising it again changes nothing.

use std::borrow::Cow;

/// What to do with `%2F` and `%5C` (encoded `/` and `\`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EncodedSlashes {
    /// Refuse the request (400): backends disagree on whether they separate
    /// segments, which is how path rules get bypassed.
    #[default]
    Reject,
    /// Leave them encoded: they are part of a segment, never a separator.
    Keep,
    /// Decode them; `%2F` then separates segments like `/`.
    Decode,
}

/// Why a path cannot be normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%2F` or `%5C` with [`EncodedSlashes::Reject`].
    #[error("the path contains an encoded slash (%2F or %5C)")]
    EncodedSlash,
    /// A `%` not followed by two hex digits.
    #[error("the path contains an invalid percent-encoding")]
    BadEscape,
}

/// Normalises an origin-form path (it starts with `/`; anything else, such
/// as `*`, is returned as it is). Borrowed when nothing changes.
pub fn normalize(path: &str, slashes: EncodedSlashes) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') || is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_escapes(path, slashes)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// The fast path: no escapes, no empty, `.` or `..` segments.
fn is_normal(path: &[u8]) -> bool {
    if path.contains(&b'%') {
        return false;
    }
    let mut segments = path[1..].split(|b| *b == b'/').peekable();
    while let Some(segment) = segments.next() {
        // An empty segment is fine only as the last one (a trailing slash).
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == b"." || segment == b".." {
            return false;
        }
    }
    true
}

fn decode_escapes(path: &str, slashes: EncodedSlashes) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    // Bytes, not chars: the path may hold UTF-8 beyond ASCII, copied as is.
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte != b'%' {
            out.push(byte);
            i += 1;
            continue;
        }
        let (Some(high), Some(low)) = (
            bytes.get(i + 1).and_then(|b| hex(*b)),
            bytes.get(i + 2).and_then(|b| hex(*b)),
        ) else {
            return Err(PathError::BadEscape);
        };
        let value = high << 4 | low;
        match value {
            b'/' | b'\\' => match slashes {
                EncodedSlashes::Reject => return Err(PathError::EncodedSlash),
                EncodedSlashes::Decode => out.push(value),
                EncodedSlashes::Keep => push_escape(&mut out, value),
            },
            _ if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') => {
                out.push(value);
            }
            _ => push_escape(&mut out, value),
        }
        i += 3;
    }
    // Only ASCII was added or removed around whole UTF-8 sequences.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

fn push_escape(out: &mut Vec<u8>, value: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[
        b'%',
        HEX[usize::from(value >> 4)],
        HEX[usize::from(value & 0xf)],
    ]);
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Resolves `.`, `..` and empty segments of a path that starts with `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    // A path ending in `/`, `/.` or `/..` names a directory: keep the slash.
    let mut trailing_slash = false;
    for segment in path[1..].split('/') {
        trailing_slash = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn norm(path: &str) -> String {
        normalize(path, EncodedSlashes::Reject)
            .unwrap()
            .into_owned()
    }

    #[test]
    fn bypass_attempts_all_reach_the_same_path() {
        for attempt in [
            "/admin",
            "//admin",
            "/./admin",
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/public/%2E./admin",
            "/%61dmin",
            "/x/y/../../admin",
            "/../admin",
            "/admin/.",
        ] {
            let normal = norm(attempt);
            assert!(
                normal == "/admin" || normal == "/admin/",
                "{attempt} -> {normal}"
            );
        }
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for path in ["/", "/a", "/a/b/", "/a.b/c..d", "/.well-known-ish", "*"] {
            assert!(
                matches!(
                    normalize(path, EncodedSlashes::Reject),
                    Ok(Cow::Borrowed(_))
                ),
                "{path}"
            );
        }
    }

    #[test]
    fn escapes_are_canonical_and_slashes_follow_the_setting() {
        assert_eq!(norm("/a%20b%7e%2a"), "/a%20b~%2A");
        assert_eq!(
            normalize("/a%2Fb", EncodedSlashes::Reject),
            Err(PathError::EncodedSlash)
        );
        assert_eq!(
            normalize("/a%5c", EncodedSlashes::Reject),
            Err(PathError::EncodedSlash)
        );
        assert_eq!(normalize("/a%2fb/..", EncodedSlashes::Keep).unwrap(), "/");
        assert_eq!(
            normalize("/a%2fb/..", EncodedSlashes::Decode).unwrap(),
            "/a/"
        );
        assert_eq!(
            normalize("/a%zz", EncodedSlashes::Keep),
            Err(PathError::BadEscape)
        );
        assert_eq!(
            normalize("/a%2", EncodedSlashes::Keep),
            Err(PathError::BadEscape)
        );
        // A literal `%` must stay escaped: `%252F` is not an encoded slash.
        assert_eq!(
            normalize("/a%252F", EncodedSlashes::Reject).unwrap(),
            "/a%252F"
        );
    }

    proptest::proptest! {
        #[test]
        fn normalising_is_idempotent_and_keeps_the_leading_slash(
            path in "/[a-zA-Z0-9./%~_é-]{0,40}",
            mode in 0..3u8,
        ) {
            let slashes = [EncodedSlashes::Reject, EncodedSlashes::Keep, EncodedSlashes::Decode][usize::from(mode)];
            if let Ok(once) = normalize(&path, slashes) {
                proptest::prop_assert!(once.starts_with('/'));
                let twice = normalize(&once, slashes).unwrap();
                proptest::prop_assert_eq!(&*twice, &*once);
            }
        }
    }

    #[test]
    fn utf8_beyond_ascii_is_copied_as_is() {
        // Found by the `path` fuzz target: bytes were widened one by one.
        let path = "//\u{1}/\u{1}\0\0\0/%cb/b\u{1}\u{4}\\//\u{344}";
        let once = norm(path);
        assert_eq!(once, "/\u{1}/\u{1}\0\0\0/%CB/b\u{1}\u{4}\\/\u{344}");
        assert_eq!(norm(&once), once);
    }

    #[test]
    fn trailing_slashes_and_the_root_are_kept() {
        assert_eq!(norm("/a/b/"), "/a/b/");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/.."), "/");
        assert_eq!(norm("//"), "/");
        assert_eq!(norm("/a//b"), "/a/b");
    }
}
