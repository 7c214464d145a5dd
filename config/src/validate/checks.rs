//! Checks of single values: names, hostnames, endpoints, paths, patterns.

use std::net::SocketAddr;

use super::MAX_PATTERN_LEN;

/// Where a cohort key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header (name lowercased).
    Header(http::HeaderName),
    /// A cookie, by name.
    Cookie(String),
    /// A query parameter, by name.
    Query(String),
}

/// Names of backends, rules (`allow_slash = false`) and routes (`true`, for
/// `namespace/name`): 1-253 letters, digits, `.`, `_`, `-`. They become
/// metric labels, so they stay short and printable.
pub(crate) fn check_name(name: &str, allow_slash: bool) -> Result<(), String> {
    let valid_char = |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || (allow_slash && c == '/')
    };
    if name.is_empty() || name.len() > 253 || !name.chars().all(valid_char) {
        let extra = if allow_slash { ", '/'" } else { "" };
        return Err(format!(
            "{name:?} must be 1-253 letters, digits, '.', '_', '-'{extra}"
        ));
    }
    Ok(())
}

/// A DNS name as Gateway API `Hostname` defines it, optionally with a
/// leading `*.` label; no port, no IP address.
pub(crate) fn check_hostname(hostname: &str) -> Result<(), String> {
    let name = hostname.strip_prefix("*.").unwrap_or(hostname);
    if hostname.len() > 253 {
        return Err("longer than 253 characters".to_owned());
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err("an IP address is not a hostname".to_owned());
    }
    check_dns_labels(name)
}

fn check_dns_labels(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".to_owned());
    }
    for label in name.split('.') {
        let bytes = label.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-';
        if !ok {
            return Err(format!(
                "label {label:?} must be 1-63 lowercase letters, digits or '-', not starting or ending with '-' (a wildcard is allowed only as a leading \"*.\")"
            ));
        }
    }
    Ok(())
}

/// `host:port`, where host is an IPv4 address, a bracketed IPv6 address or a
/// DNS name.
pub(crate) fn check_endpoint(endpoint: &str) -> Result<(), String> {
    if endpoint.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let invalid = |why: &str| Err(format!("invalid endpoint {endpoint:?}: {why}"));
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return invalid("expected host:port");
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return invalid("port must be 1-65535"),
        Ok(_) => {}
    }
    if host.starts_with('[') || host.contains(':') {
        return invalid("IPv6 addresses are written [addr]:port");
    }
    match check_dns_labels(&host.to_ascii_lowercase()) {
        Ok(()) => Ok(()),
        Err(why) => invalid(&format!("host: {why}")),
    }
}

/// A path for `Exact` and `PathPrefix` matches, with the Gateway API's rules.
pub(crate) fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'"));
    }
    if path.len() > MAX_PATTERN_LEN {
        return Err(format!(
            "path is {} bytes; at most {MAX_PATTERN_LEN} are allowed",
            path.len()
        ));
    }
    for bad in ["//", "/./", "/../", "%2f", "%2F", "#"] {
        if path.contains(bad) {
            return Err(format!("path {path:?} must not contain {bad:?}"));
        }
    }
    if path.ends_with("/..") || path.ends_with("/.") {
        return Err(format!("path {path:?} must not end with \"/..\" or \"/.\""));
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "path {path:?} must not contain spaces or control characters"
        ));
    }
    Ok(())
}

/// A regular expression for the Rust `regex` crate, bounded in length and
/// compiled size so a hostile table cannot exhaust memory.
pub(crate) fn check_regex(pattern: &str) -> Result<(), String> {
    compile_regex(pattern).map(drop)
}

/// Compiles `pattern` anchored as a full match.
pub(crate) fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!(
            "regular expression is {} bytes; at most {MAX_PATTERN_LEN} are allowed",
            pattern.len()
        ));
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regular expression: {}", first_line(&e.to_string())))
}

fn first_line(text: &str) -> String {
    // The regex crate's messages span lines (pattern, caret, reason); keep
    // the reason on one line so `path: reason` stays readable.
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses `header:NAME`, `cookie:NAME` or `query:NAME`.
pub(crate) fn parse_key_source(text: &str) -> Result<KeySource, String> {
    let invalid =
        || format!("invalid key source {text:?}: expected header:NAME, cookie:NAME or query:NAME");
    let (kind, name) = text.split_once(':').ok_or_else(invalid)?;
    if name.is_empty() {
        return Err(invalid());
    }
    match kind {
        "header" => http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map(KeySource::Header)
            .map_err(|_| format!("invalid header name {name:?} in key source")),
        "cookie" => check_cookie_name(name).map(|()| KeySource::Cookie(name.to_owned())),
        "query" => Ok(KeySource::Query(name.to_owned())),
        _ => Err(invalid()),
    }
}

/// A cookie name is an HTTP token (RFC 6265).
pub(crate) fn check_cookie_name(name: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || name.len() > 256 || !name.bytes().all(token) {
        return Err(format!(
            "invalid cookie name {name:?}: expected an HTTP token"
        ));
    }
    Ok(())
}
