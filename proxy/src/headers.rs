//! Header hygiene between hops: hop-by-hop removal, forwarding headers,
//! request ids.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Response header naming the backend that served (opt-in).
pub const BACKEND_HEADER: HeaderName = HeaderName::from_static("x-switchyard-backend");
/// Request header carrying the version decision to the next hop (opt-in).
pub const DECISION_HEADER: HeaderName = HeaderName::from_static("x-switchyard-decision");

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Hop-by-hop headers (RFC 9110 section 7.6.1) that are never forwarded,
/// by name: compared with raw names (the in-task client's parser, the
/// tokens of `Connection`) without building a `HeaderName` for each.
const HOP_BY_HOP_NAMES: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The same headers as `HeaderName`s, for maps. A static, not a const:
/// each use of a const array of names builds a temporary and drops it name
/// by name (about 40 instructions a use).
static HOP_BY_HOP: [HeaderName; 7] = [
    HeaderName::from_static(HOP_BY_HOP_NAMES[0]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[1]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[2]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[3]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[4]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[5]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[6]),
];

/// Whether `name` (raw bytes, any case) is one of the fixed hop-by-hop
/// headers.
pub(crate) fn is_hop_by_hop_name(name: &[u8]) -> bool {
    HOP_BY_HOP_NAMES
        .iter()
        .any(|known| known.as_bytes().eq_ignore_ascii_case(name))
}

/// Appends one HTTP/1.1 field line, `name: value` and CRLF: the request
/// heads the in-task client writes and the responses the fast path writes.
pub(crate) fn append_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether the request asks for a protocol upgrade (WebSocket and others).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    has(headers, &header::UPGRADE) && connection_has(headers, "upgrade")
}

/// Whether `name` is present, by a pass over the map's names. On the few
/// headers of a usual message, where most names asked for are absent, this
/// costs about half the hashed lookup of `contains_key` (about 110
/// instructions); a map at the 100-header limit takes several hundred.
pub(crate) fn has(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.keys().any(|present| present == name)
}

/// The values of `name`, in order, by a pass over the map (see [`has`]).
pub(crate) fn values<'a>(
    headers: &'a HeaderMap,
    name: &'a HeaderName,
) -> impl Iterator<Item = &'a HeaderValue> {
    headers
        .iter()
        .filter(move |(present, _)| *present == name)
        .map(|(_, value)| value)
}

/// Removes hop-by-hop headers, those the `Connection` header names, and a
/// `Content-Length` beside `Transfer-Encoding`. With `keep_upgrade`,
/// `Upgrade` and `Connection: upgrade` stay (the tunnel is negotiated end
/// to end). `te: trailers` stays: gRPC needs it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // The common case: nothing to strip. One pass over the (few) names is
    // cheaper than a hash lookup per hop-by-hop name.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let upgrade = keep_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    let trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    // A Content-Length beside Transfer-Encoding is wrong for the body the
    // next hop gets (decoded here, framed again there): an intermediary
    // removes it (RFC 9112 section 6.3). Requests with both never get
    // this far (`guard`); responses through hyper's client could.
    let transfer_coded = has(headers, &header::TRANSFER_ENCODING);
    // Only names present are removed: most of the fixed ones are absent,
    // and a removal costs a hash lookup present or not.
    let doomed: Vec<HeaderName> = {
        // Tokens naming a fixed hop-by-hop header need no matching of their
        // own; the usual `Connection: keep-alive` leaves this empty, and an
        // empty Vec does not allocate.
        let listed: Vec<&str> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|token| !is_hop_by_hop_name(token.as_bytes()))
            .collect();
        headers
            .keys()
            .filter(|name| {
                HOP_BY_HOP.contains(name)
                    || (transfer_coded && *name == header::CONTENT_LENGTH)
                    || listed
                        .iter()
                        .any(|token| name.as_str().eq_ignore_ascii_case(token))
            })
            .cloned()
            .collect()
    };
    for name in doomed {
        headers.remove(name);
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes the headers named in `names` that are present, finding them by
/// a pass over the map's names rather than a hash lookup per name (most
/// are absent). The pass starts again after each removal, which is rare:
/// collecting the names to remove first cost 200 instructions even when
/// there were none.
pub(crate) fn remove_present(headers: &mut HeaderMap, names: &[HeaderName]) {
    while let Some(name) = headers.keys().find(|name| names.contains(name)).cloned() {
        headers.remove(name);
    }
}

pub(crate) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    // Usually absent: the scan of names says so for less than a lookup.
    if !has(headers, &header::CONNECTION) {
        return false;
    }
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Forwarding headers a client could forge.
static FORWARDING: [HeaderName; 5] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    header::FORWARDED,
];

/// Sets the forwarding headers for the next hop. From a `trusted` client
/// (a proxy in front of us) the client is appended to `x-forwarded-for` and
/// `forwarded`; from anyone else the incoming forwarding headers are
/// dropped first, so a client cannot claim another address. Sets
/// `x-forwarded-proto`; with `forwarded` also adds an RFC 7239 element.
pub fn add_forwarding(
    headers: &mut HeaderMap,
    client: IpAddr,
    proto: &'static str,
    forwarded: bool,
    trusted: bool,
) {
    if !trusted {
        remove_present(headers, &FORWARDING);
    }
    let existing = if trusted {
        headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok())
    } else {
        None
    };
    let xff = match existing {
        None => Ok(client_value(client)),
        Some(existing) => HeaderValue::try_from(format!("{existing}, {client}")),
    };
    if let Ok(value) = xff {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if forwarded {
        let node = match client {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        if let Ok(value) = HeaderValue::try_from(format!("for={node};proto={proto}")) {
            headers.append(header::FORWARDED, value);
        }
    }
}

/// A client's address as a header value. The last one made is kept per
/// thread and shared (cloning a `HeaderValue` counts a reference): the
/// requests of a connection come from one address, as do all of a
/// sidecar's and those of a gateway behind a load balancer, and writing
/// the address out and copying it into a new value cost about 300
/// instructions a request.
fn client_value(client: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some((address, value)) = last
            && *address == client
        {
            return value.clone();
        }
        let value = match client {
            IpAddr::V4(v4) => ipv4_value(v4),
            // Addresses always make valid values; the fallback is never used.
            IpAddr::V6(v6) => HeaderValue::try_from(v6.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        };
        *last = Some((client, value.clone()));
        value
    })
}

/// An IPv4 address as a header value, written digit by digit: `Display`
/// goes through the formatter for every octet, which cost more than the
/// rest of the forwarding headers together.
fn ipv4_value(ip: Ipv4Addr) -> HeaderValue {
    let mut text = [0u8; 15];
    let mut len = 0;
    for (index, octet) in ip.octets().into_iter().enumerate() {
        if index > 0 {
            text[len] = b'.';
            len += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = if octet >= 100 {
            0
        } else if octet >= 10 {
            1
        } else {
            2
        };
        for digit in &digits[skip..] {
            text[len] = b'0' + digit;
            len += 1;
        }
    }
    HeaderValue::from_bytes(&text[..len]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The request's id, generating a UUID v4 when it has none.
///
/// With `trust_incoming` false (an internet-facing gateway), an incoming id
/// is replaced: clients must not be able to choose ids that other systems
/// correlate on.
pub fn ensure_request_id(headers: &mut HeaderMap, trust_incoming: bool) -> HeaderValue {
    if trust_incoming
        && let Some(existing) = headers.get_mut(REQUEST_ID)
        && !existing.is_empty()
    {
        existing.set_sensitive(true);
        return existing.clone();
    }
    let id = uuid::Uuid::new_v4();
    let mut buffer = uuid::Uuid::encode_buffer();
    let mut value = HeaderValue::from_str(id.hyphenated().encode_lower(&mut buffer))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    // A value unique to each request: HPACK must not index it. Indexed, each
    // response inserted one more id into the HTTP/2 connection's table and
    // the encoder compared every new id with the ones already there.
    value.set_sensitive(true);
    headers.insert(REQUEST_ID, value.clone());
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers, gzip"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers, false);
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, vec!["x-kept", "te"]);
        assert_eq!(headers[header::TE], "trailers");
    }

    #[test]
    fn strips_only_names_the_connection_header_lists_whatever_their_case() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONNECTION, HeaderValue::from_static("Close"));
        headers.append(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, X-Custom-Hop"),
        );
        headers.insert("close", HeaderValue::from_static("1"));
        headers.insert("x-custom-hop", HeaderValue::from_static("1"));
        headers.insert("x-custom", HeaderValue::from_static("kept"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        strip_hop_by_hop(&mut headers, false);
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["content-length", "x-custom"]);
    }

    #[test]
    fn removes_only_what_is_present() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        headers.append(X_FORWARDED_FOR, HeaderValue::from_static("a"));
        headers.append(X_FORWARDED_FOR, HeaderValue::from_static("b"));
        headers.insert(header::HOST, HeaderValue::from_static("kept"));
        remove_present(&mut headers, &FORWARDING);
        remove_present(&mut headers, &[header::CONTENT_LENGTH, DECISION_HEADER]);
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, vec!["host"]);
    }

    #[test]
    fn keeps_upgrade_for_tunnels() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade_request(&headers));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert_eq!(headers[header::CONNECTION], "upgrade");
    }

    #[test]
    fn forwarding_headers_append_from_trusted_hops_only() {
        let incoming = || {
            let mut headers = HeaderMap::new();
            headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
            headers.insert(
                header::FORWARDED,
                HeaderValue::from_static("for=203.0.113.7"),
            );
            headers.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
            headers
        };
        let mut trusted = incoming();
        add_forwarding(&mut trusted, "::1".parse().unwrap(), "http", true, true);
        assert_eq!(trusted[X_FORWARDED_FOR], "203.0.113.7, ::1");
        assert_eq!(trusted[X_FORWARDED_PROTO], "http");
        let forwarded: Vec<_> = trusted.get_all(header::FORWARDED).iter().collect();
        assert_eq!(forwarded, ["for=203.0.113.7", "for=\"[::1]\";proto=http"]);

        let mut untrusted = incoming();
        add_forwarding(&mut untrusted, "::1".parse().unwrap(), "http", true, false);
        assert_eq!(untrusted[X_FORWARDED_FOR], "::1");
        assert_eq!(untrusted[header::FORWARDED], "for=\"[::1]\";proto=http");
        assert!(!untrusted.contains_key("x-forwarded-host"));
    }

    #[test]
    fn ipv4_values_match_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.9.99.100",
            "255.255.255.255",
            "1.20.255.7",
        ] {
            let ip: Ipv4Addr = ip.parse().unwrap();
            assert_eq!(ipv4_value(ip), ip.to_string());
        }
    }

    #[test]
    fn the_kept_client_value_follows_the_address() {
        for ip in [
            "10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.1", "::1", "::1", "10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(client_value(ip), ip.to_string());
        }
    }

    #[test]
    fn request_id_is_kept_or_generated() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(ensure_request_id(&mut headers, true), "abc");
        let replaced = ensure_request_id(&mut headers, false);
        assert_ne!(replaced, "abc");
        assert_eq!(headers[REQUEST_ID], replaced);
        let mut empty = HeaderMap::new();
        let id = ensure_request_id(&mut empty, true);
        assert_eq!(id.len(), 36);
        // Never indexed by HPACK: every id is new.
        assert!(id.is_sensitive() && empty[REQUEST_ID].is_sensitive());
        assert_eq!(empty[REQUEST_ID], id);
    }
}
