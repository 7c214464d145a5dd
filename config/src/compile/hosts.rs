//! Host-indexed candidate lists.
//!
//! Gateway API precedence puts hostname specificity first: rules of routes
//! with a matching exact hostname, then of the longest matching wildcard,
//! shorter wildcards, and last the routes with no hostnames. Each list below
//! is that whole order precomputed, so a request does one hash lookup (plus
//! one per label for wildcard hosts) and then scans a short list.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use rustc_hash::FxHashMap;

/// Entry indices per host group, each list in precedence order.
#[derive(Debug, Default)]
pub(crate) struct HostIndex {
    // FxHash: hostnames are short and the map is fixed once compiled (no
    // inserts from peers), so flooding attacks on the hasher do not apply and
    // the cheaper hash shortens every request.
    exact: FxHashMap<Box<str>, Box<[u32]>>,
    /// Keyed by the suffix after `*.`.
    wildcard: FxHashMap<Box<str>, Box<[u32]>>,
    any: Box<[u32]>,
}

/// Entries grouped by the hostname that attached them, each group already
/// sorted by match precedence.
#[derive(Debug, Default)]
pub(crate) struct HostGroups {
    pub(crate) exact: HashMap<String, Vec<u32>>,
    pub(crate) wildcard: HashMap<String, Vec<u32>>,
    pub(crate) any: Vec<u32>,
}

/// Hostnames that routes name explicitly, exact and wildcard.
#[derive(Debug, Default)]
pub(crate) struct HostNames {
    exact: HashSet<Box<str>>,
    /// Suffixes after `*.`.
    wildcard: Vec<Box<str>>,
}

// === impl HostNames ===

impl HostNames {
    /// Adds a route's (validated, lowercase) hostnames.
    pub(crate) fn extend(&mut self, hostnames: &[String]) {
        for hostname in hostnames {
            match hostname.strip_prefix("*.") {
                Some(suffix) => self.wildcard.push(suffix.into()),
                None => {
                    self.exact.insert(hostname.as_str().into());
                }
            }
        }
    }

    /// Whether a request's host (port and case ignored) is named.
    pub(crate) fn covers(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.exact.contains(host.as_ref())
            || self
                .wildcard
                .iter()
                .any(|suffix| wildcard_covers(suffix, &host))
    }
}

// === impl HostIndex ===

impl HostIndex {
    pub(crate) fn build(groups: HostGroups) -> Self {
        // Wildcard suffixes, longest first, for the fall-through order.
        let mut suffixes: Vec<&String> = groups.wildcard.keys().collect();
        suffixes.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        let wildcard_chain = |host: &str, out: &mut Vec<u32>, seen: &mut HashSet<u32>| {
            for suffix in &suffixes {
                if wildcard_covers(suffix, host) {
                    push_unique(out, seen, &groups.wildcard[*suffix]);
                }
            }
            push_unique(out, seen, &groups.any);
        };
        let exact = groups
            .exact
            .iter()
            .map(|(host, own)| {
                let (mut list, mut seen) = (Vec::new(), HashSet::new());
                push_unique(&mut list, &mut seen, own);
                wildcard_chain(host, &mut list, &mut seen);
                (host.as_str().into(), list.into_boxed_slice())
            })
            .collect();
        let wildcard = groups
            .wildcard
            .iter()
            .map(|(suffix, own)| {
                let (mut list, mut seen) = (Vec::new(), HashSet::new());
                push_unique(&mut list, &mut seen, own);
                // A host under this wildcard is also under shorter ones.
                wildcard_chain(&format!("x.{suffix}"), &mut list, &mut seen);
                (suffix.as_str().into(), list.into_boxed_slice())
            })
            .collect();
        Self {
            exact,
            wildcard,
            any: groups.any.into_boxed_slice(),
        }
    }

    /// The candidate entries for a request's host (port and case ignored).
    pub(crate) fn candidates(&self, host: &str) -> &[u32] {
        let host = normalize_host(host);
        if let Some(list) = self.exact.get(host.as_ref()) {
            return list;
        }
        if !self.wildcard.is_empty() {
            // The first dot gives the longest suffix, which is the most specific.
            for (i, byte) in host.bytes().enumerate() {
                if byte == b'.'
                    && let Some(list) = self.wildcard.get(&host[i + 1..])
                {
                    return list;
                }
            }
        }
        &self.any
    }
}

/// Whether `*.suffix` covers `host` (at least one label before the suffix).
fn wildcard_covers(suffix: &str, host: &str) -> bool {
    host.len() > suffix.len() + 1
        && host.ends_with(suffix)
        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
}

fn push_unique(out: &mut Vec<u32>, seen: &mut HashSet<u32>, entries: &[u32]) {
    for entry in entries {
        if seen.insert(*entry) {
            out.push(*entry);
        }
    }
}

/// `name:digits` without the `:digits`; a short backwards scan, since
/// ports are a few digits at the end.
fn strip_port(host: &str) -> &str {
    let bytes = host.as_bytes();
    let mut i = bytes.len();
    while i > 0 && bytes[i - 1].is_ascii_digit() {
        i -= 1;
    }
    if i > 0 && i < bytes.len() && bytes[i - 1] == b':' {
        &host[..i - 1]
    } else {
        host
    }
}

/// Lowercase, without port or trailing dot. Borrows when already clean.
pub(crate) fn normalize_host(host: &str) -> Cow<'_, str> {
    let without_port = if host.starts_with('[') {
        // [v6]:port keeps its brackets.
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        strip_port(host)
    };
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_hosts() {
        assert_eq!(normalize_host("Shop.Example.com:8080"), "shop.example.com");
        assert_eq!(normalize_host("shop.example.com."), "shop.example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(normalize_host("127.0.0.1:80"), "127.0.0.1");
        assert_eq!(normalize_host("host:"), "host:");
        assert_eq!(normalize_host("host:8a"), "host:8a");
    }

    #[test]
    fn wildcard_needs_a_label() {
        assert!(wildcard_covers("example.com", "a.example.com"));
        assert!(wildcard_covers("example.com", "a.b.example.com"));
        assert!(!wildcard_covers("example.com", "example.com"));
        assert!(!wildcard_covers("example.com", "aexample.com"));
    }
}
