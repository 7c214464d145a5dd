//! Precompiled request matchers (path, method, headers, query).

use std::borrow::Cow;

use http::{HeaderName, Method};
use regex::Regex;

use super::RequestHead;
use crate::spec::{MatchSpec, PathMatchKind, ValueMatchKind, ValueMatchSpec};
use crate::validate::checks::compile_regex;

/// One compiled `MatchSpec`: every condition must hold.
#[derive(Debug)]
pub(crate) struct Matcher {
    path: PathMatcher,
    method: Option<Method>,
    headers: Box<[(HeaderName, ValueMatcher)]>,
    query: Box<[(String, ValueMatcher)]>,
}

#[derive(Debug)]
enum PathMatcher {
    Exact(Box<str>),
    /// Normalised without a trailing slash; `/` matches everything.
    Prefix(Box<str>),
    Regex(Regex),
}

#[derive(Debug)]
enum ValueMatcher {
    Exact(Box<str>),
    Regex(Regex),
}

/// Sort key for Gateway API precedence among matches of one hostname group:
/// larger is more specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Specificity {
    path_kind: u8,
    path_len: usize,
    has_method: bool,
    headers: usize,
    query: usize,
}

// === impl Matcher ===

impl Matcher {
    /// Compiles a validated match. Patterns were checked by validation, so a
    /// failure here is reported as an internal error by the caller.
    pub(crate) fn compile(spec: &MatchSpec) -> Result<(Self, Specificity), String> {
        let path_spec = spec.path.as_ref();
        let (kind, value) = path_spec.map_or((PathMatchKind::PathPrefix, "/"), |p| {
            (p.kind, p.value.as_str())
        });
        let path = match kind {
            PathMatchKind::Exact => PathMatcher::Exact(value.into()),
            PathMatchKind::PathPrefix => PathMatcher::Prefix(value.trim_end_matches('/').into()),
            PathMatchKind::RegularExpression => PathMatcher::Regex(compile_regex(value)?),
        };
        let method = spec
            .method
            .as_deref()
            .map(|m| Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string()))
            .transpose()?;
        let headers = spec
            .headers
            .iter()
            .map(|h| {
                let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| e.to_string())?;
                Ok((name, ValueMatcher::compile(h)?))
            })
            .collect::<Result<_, String>>()?;
        let query = spec
            .query_params
            .iter()
            .map(|q| Ok((q.name.clone(), ValueMatcher::compile(q)?)))
            .collect::<Result<_, String>>()?;
        let specificity = Specificity {
            // Gateway API leaves regex precedence to implementations; like
            // Envoy Gateway we rank it between Exact and PathPrefix, so a
            // catch-all prefix never shadows a regex.
            path_kind: match kind {
                PathMatchKind::Exact => 3,
                PathMatchKind::RegularExpression => 2,
                PathMatchKind::PathPrefix => 1,
            },
            path_len: value.len(),
            has_method: spec.method.is_some(),
            headers: spec.headers.len(),
            query: spec.query_params.len(),
        };
        Ok((
            Self {
                path,
                method,
                headers,
                query,
            },
            specificity,
        ))
    }

    /// Whether the request satisfies every condition.
    pub(crate) fn matches(&self, head: &RequestHead<'_>) -> bool {
        let path_ok = match &self.path {
            PathMatcher::Exact(value) => short_eq(head.path.as_bytes(), value.as_bytes()),
            PathMatcher::Prefix(prefix) => prefix_matches(prefix, head.path),
            PathMatcher::Regex(regex) => regex.is_match(head.path),
        };
        if !path_ok {
            return false;
        }
        if let Some(method) = &self.method
            && method != head.method
        {
            return false;
        }
        // `get` returns the first value: the first duplicate header wins.
        let headers_ok = self.headers.iter().all(|(name, matcher)| {
            head.headers
                .get(name)
                .is_some_and(|value| matcher.matches_bytes(value.as_bytes()))
        });
        headers_ok
            && self.query.iter().all(|(name, matcher)| {
                head.query_param(name)
                    .is_some_and(|value| matcher.matches_bytes(&value))
            })
    }
}

/// Element-wise prefix: `/abc` matches `/abc`, `/abc/` and `/abc/d`, not `/abcd`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let (prefix, path) = (prefix.as_bytes(), path.as_bytes());
    let Some(last) = prefix.last() else {
        return true;
    };
    // Prefixes in one table often differ only at their end (`/api/v1`,
    // `/api/v2`): checking that byte first rejects most candidates without a
    // full comparison.
    path.len() >= prefix.len()
        && path[prefix.len() - 1] == *last
        && matches!(path.get(prefix.len()), None | Some(b'/'))
        && short_eq(&path[..prefix.len()], prefix)
}

/// Byte equality, compared eight bytes at a time inline: for the short
/// strings of paths this beats a call to `memcmp`.
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut a_chunks = a.chunks_exact(8);
    let mut b_chunks = b.chunks_exact(8);
    for (x, y) in a_chunks.by_ref().zip(b_chunks.by_ref()) {
        if x.iter().zip(y).fold(0u8, |acc, (p, q)| acc | (p ^ q)) != 0 {
            return false;
        }
    }
    a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .all(|(p, q)| p == q)
}

// === impl ValueMatcher ===

impl ValueMatcher {
    fn compile(spec: &ValueMatchSpec) -> Result<Self, String> {
        Ok(match spec.kind {
            ValueMatchKind::Exact => Self::Exact(spec.value.as_str().into()),
            ValueMatchKind::RegularExpression => Self::Regex(compile_regex(&spec.value)?),
        })
    }

    fn matches_bytes(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact(expected) => value == expected.as_bytes(),
            Self::Regex(regex) => std::str::from_utf8(value).is_ok_and(|v| regex.is_match(v)),
        }
    }
}

/// The first value of query parameter `name` (percent-decoded), if any.
pub(crate) fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, [u8]>> {
    query?
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key).as_ref() == name.as_bytes()).then(|| decode(value))
        })
        .next()
}

fn decode(text: &str) -> Cow<'_, [u8]> {
    Cow::from(percent_encoding::percent_decode_str(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_element_wise() {
        assert!(prefix_matches("/abc", "/abc"));
        assert!(prefix_matches("/abc", "/abc/"));
        assert!(prefix_matches("/abc", "/abc/def"));
        assert!(!prefix_matches("/abc", "/abcd"));
        assert!(!prefix_matches("/abc", "/ab"));
        assert!(prefix_matches("", "/anything"));
    }

    #[test]
    fn short_eq_compares_every_byte() {
        assert!(short_eq(b"", b""));
        assert!(short_eq(b"/api/v2/items/long", b"/api/v2/items/long"));
        assert!(!short_eq(b"/api/v2/items/long", b"/api/v2/items/lonG"));
        assert!(!short_eq(b"/api/v2/Items/long", b"/api/v2/items/long"));
        assert!(!short_eq(b"/api", b"/api/"));
    }

    #[test]
    fn query_params_first_value_decoded() {
        assert_eq!(
            query_param(Some("a=1&b=x%20y&a=2"), "a").as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(
            query_param(Some("a=1&b=x%20y"), "b").as_deref(),
            Some(&b"x y"[..])
        );
        assert_eq!(
            query_param(Some("flag&a=1"), "flag").as_deref(),
            Some(&b""[..])
        );
        assert_eq!(query_param(Some("a=1"), "c"), None);
        assert_eq!(query_param(None, "a"), None);
    }
}
