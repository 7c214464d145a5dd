//! The header fields of an HTTP/1.1 response head, relayed as they arrived.
//!
//! Building a `HeaderMap` from a response head (a `HeaderName` and a
//! hashed insert a field) and walking it again to write the head to the
//! client cost about 2,000 instructions of the ~22,700 a proxied HTTP/1.1
//! request took. The proxy reads none of an upstream response's
//! end-to-end fields, so they stay where they are: ranges into the head's
//! bytes, which the connection's HTTP/1.1 writer copies out as they are.
//! Where the response goes on through hyper (an HTTP/2 client, or an
//! HTTP/1.1 connection hyper serves), they are moved into the response's
//! map first ([`RelayedFields::move_into`]). A field the proxy sets itself
//! (the request id, the backend's name) is removed from here when it is
//! set in the map, so a response never carries both.

use std::ops::Range;

use bytes::Bytes;
use http::header::{Entry, HeaderMap, HeaderName, HeaderValue, SET_COOKIE};

/// End-to-end fields of a response head, in the order they came.
#[derive(Debug, Default)]
pub(crate) struct RelayedFields {
    /// The head's bytes, which the ranges index.
    head: Bytes,
    fields: Vec<Field>,
}

/// Where one field's name and value lie in the head. Both were checked by
/// the parser (httparse) against the same rules `http` checks a
/// `HeaderName` (a token) and a `HeaderValue` (no control bytes but tab)
/// against.
#[derive(Debug, Clone)]
pub(super) struct Field {
    pub(super) name: Range<usize>,
    pub(super) value: Range<usize>,
}

impl RelayedFields {
    pub(super) fn new(head: Bytes, fields: Vec<Field>) -> Self {
        Self { head, fields }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Each field's name (as it came: any case) and value.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter().map(|field| {
            (
                &self.head[field.name.clone()],
                &self.head[field.value.clone()],
            )
        })
    }

    /// Writes the fields but those `skip` refuses (given each name) as
    /// `name: value` lines. A run of lines that lie one after the other in
    /// the head, each ended by CRLF there, is copied in one piece, as it
    /// came: the separator after the colon included, and a bare LF (which
    /// the parser accepts) never passed on.
    pub(crate) fn write_lines(&self, out: &mut Vec<u8>, mut skip: impl FnMut(&[u8]) -> bool) {
        let head = &self.head[..];
        let mut flush = |run: Range<usize>| {
            out.extend_from_slice(&head[run]);
            out.extend_from_slice(b"\r\n");
        };
        // The lines being gathered: from a name's start to a value's end.
        let mut run: Option<Range<usize>> = None;
        for field in &self.fields {
            if skip(&head[field.name.clone()]) {
                if let Some(lines) = run.take() {
                    flush(lines);
                }
                continue;
            }
            if let Some(lines) = &mut run
                && head.get(lines.end..field.name.start) == Some(b"\r\n")
            {
                lines.end = field.value.end;
                continue;
            }
            if let Some(lines) = run.replace(field.name.start..field.value.end) {
                flush(lines);
            }
        }
        if let Some(lines) = run {
            flush(lines);
        }
    }

    /// Removes every field named `name`.
    pub(crate) fn remove(&mut self, name: &HeaderName) {
        let head = &self.head;
        let name = name.as_str().as_bytes();
        let named = |field: &Field| head[field.name.clone()].eq_ignore_ascii_case(name);
        // Most responses have none: a look first, cheaper than a retain.
        if self.fields.iter().any(named) {
            self.fields.retain(|field| !named(field));
        }
    }

    /// Moves the fields into `map`. Of a name both have, the map's values
    /// stay last, as the HTTP/1.1 writer puts them: the proxy sets every
    /// other field it adds (and removes the relayed ones of that name, see
    /// `ProxyBody::set_header`) and adds only a cohort cookie, which must
    /// follow the backend's own cookies.
    pub(crate) fn move_into(self, map: &mut HeaderMap) {
        // A pass over the few names first: cheaper than the hashed lookup.
        let own_cookies: Vec<HeaderValue> = if crate::headers::has(map, &SET_COOKIE)
            && let Entry::Occupied(cookies) = map.entry(SET_COOKIE)
        {
            cookies.remove_entry_mult().1.collect()
        } else {
            Vec::new()
        };
        map.reserve(self.fields.len());
        for field in self.fields {
            let name = HeaderName::from_bytes(&self.head[field.name.clone()]);
            let value = HeaderValue::from_maybe_shared(self.head.slice(field.value));
            // Cannot fail: the parser held both to the same rules. Were it
            // to, the field is left out rather than the response lost.
            if let (Ok(name), Ok(value)) = (name, value) {
                map.append(name, value);
            } else {
                tracing::debug!(field = ?&self.head[field.name], "a relayed field was refused");
            }
        }
        for cookie in own_cookies {
            map.append(SET_COOKIE, cookie);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(head: &'static [u8]) -> RelayedFields {
        // "Name: value\r\n" lines; the ranges are found the way the parser's
        // are: name up to the colon, value after ": " up to the line end.
        let mut found = Vec::new();
        let mut start = 0;
        for line in head.split(|&b| b == b'\n') {
            let colon = line.iter().position(|&b| b == b':').unwrap();
            let end = line.len() - usize::from(line.ends_with(b"\r"));
            found.push(Field {
                name: start..start + colon,
                value: start + colon + 2..start + end,
            });
            start += line.len() + 1;
        }
        RelayedFields::new(Bytes::from_static(head), found)
    }

    #[test]
    fn removal_ignores_the_case_the_backend_used() {
        let mut relayed =
            fields(b"X-Request-Id: theirs\r\nSet-Cookie: a=1\r\nx-request-id: again\r\nDate: then");
        relayed.remove(&http::header::HeaderName::from_static("x-request-id"));
        let left: Vec<_> = relayed.iter().collect();
        assert_eq!(
            left,
            [
                (&b"Set-Cookie"[..], &b"a=1"[..]),
                (&b"Date"[..], &b"then"[..])
            ]
        );
    }

    #[test]
    fn lines_are_written_in_runs_and_each_ends_in_crlf() {
        let relayed = fields(b"A: 1\r\nB:\t2\r\nSkip: x\r\nC: 3\r\nD: 4\nE: 5\r\nF: 6");
        let mut out = Vec::new();
        let mut seen = Vec::new();
        relayed.write_lines(&mut out, |name| {
            seen.push(String::from_utf8(name.to_vec()).unwrap());
            name == b"Skip"
        });
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A: 1\r\nB:\t2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\n"
        );
        assert_eq!(seen, ["A", "B", "Skip", "C", "D", "E", "F"]);
    }

    #[test]
    fn moved_into_a_map_they_come_before_the_proxys_own_cookies() {
        let relayed = fields(b"Set-Cookie: a=1\r\nServer: them\r\nset-cookie: b=2");
        let mut map = HeaderMap::new();
        map.append("set-cookie", HeaderValue::from_static("cohort=green"));
        map.append("x-request-id", HeaderValue::from_static("ours"));
        map.append("set-cookie", HeaderValue::from_static("c=3"));
        relayed.move_into(&mut map);
        let cookies: Vec<_> = map.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2", "cohort=green", "c=3"]);
        assert_eq!(map["server"], "them");
        assert_eq!(map["x-request-id"], "ours");
        assert_eq!(map.len(), 6);
    }
}
