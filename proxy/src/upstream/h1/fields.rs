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
//! (the request id, the backend's name) replaces the backend's of that
//! name, and is kept here too: in the response's map it would often be
//! the only field, and a map's first insert allocates it (twice), its drop
//! frees it; about 550 instructions a response.

use std::ops::Range;

use bytes::Bytes;
use http::header::{Entry, HeaderMap, HeaderName, HeaderValue, SET_COOKIE};

/// End-to-end fields of a response head, in the order they came, and
/// those the proxy set on the response.
#[derive(Debug, Default)]
pub(crate) struct RelayedFields {
    /// The head's bytes, which the ranges index.
    pub(super) head: Bytes,
    /// Kept with its room from one response on a connection to the next.
    pub(super) fields: Vec<Field>,
    /// Set by the proxy, each name once: the request id, the backend's
    /// name (`--expose-backend`).
    set: [Option<(HeaderName, HeaderValue)>; 2],
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
    /// Lets go of the fields (and of the head's bytes, which share the
    /// upstream connection's read buffer); the Vec keeps its room.
    pub(crate) fn clear(&mut self) {
        self.head = Bytes::new();
        self.fields.clear();
        self.set = Default::default();
    }

    /// Sets `name` to `value`, in place of the backend's fields of that
    /// name and of a value set before; given back when there is no room
    /// (the caller puts it in the response's map).
    pub(crate) fn set(
        &mut self,
        name: HeaderName,
        value: HeaderValue,
    ) -> Option<(HeaderName, HeaderValue)> {
        self.remove(&name);
        let slot = self
            .set
            .iter_mut()
            .find(|slot| slot.as_ref().is_none_or(|(set, _)| *set == name));
        match slot {
            Some(slot) => {
                *slot = Some((name, value));
                None
            }
            None => Some((name, value)),
        }
    }

    /// The fields the proxy set.
    pub(crate) fn set_fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.set.iter().flatten().map(|(name, value)| (name, value))
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

    /// Removes every field of the backend's named `name`.
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
    /// other field it adds (see [`RelayedFields::set`]) and adds only a
    /// cohort cookie, which must follow the backend's own cookies.
    pub(crate) fn move_into(&mut self, map: &mut HeaderMap) {
        // A pass over the few names first: cheaper than the hashed lookup.
        let own_cookies: Vec<HeaderValue> = if crate::headers::has(map, &SET_COOKIE)
            && let Entry::Occupied(cookies) = map.entry(SET_COOKIE)
        {
            cookies.remove_entry_mult().1.collect()
        } else {
            Vec::new()
        };
        map.reserve(self.fields.len() + self.set.len());
        for field in self.fields.drain(..) {
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
        for (name, value) in self.set.iter_mut().filter_map(Option::take) {
            map.insert(name, value);
        }
        self.head = Bytes::new();
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
        RelayedFields {
            head: Bytes::from_static(head),
            fields: found,
            set: Default::default(),
        }
    }

    #[test]
    fn a_set_field_replaces_the_backends_in_any_case_and_an_earlier_set() {
        let mut relayed =
            fields(b"X-Request-Id: theirs\r\nSet-Cookie: a=1\r\nx-request-id: again\r\nDate: then");
        let id = HeaderName::from_static("x-request-id");
        let backend = HeaderName::from_static("x-switchyard-backend");
        let third = HeaderName::from_static("x-third");
        let value = HeaderValue::from_static;
        assert!(relayed.set(id.clone(), value("first")).is_none());
        assert!(relayed.set(backend.clone(), value("blue")).is_none());
        assert!(relayed.set(id.clone(), value("ours")).is_none());
        // Two slots: a third name goes back to the caller, for the map.
        assert_eq!(
            relayed.set(third.clone(), value("x")),
            Some((third, value("x")))
        );
        let left: Vec<_> = relayed.iter().collect();
        assert_eq!(
            left,
            [
                (&b"Set-Cookie"[..], &b"a=1"[..]),
                (&b"Date"[..], &b"then"[..])
            ]
        );
        let set: Vec<_> = relayed.set_fields().collect();
        assert_eq!(set, [(&id, &value("ours")), (&backend, &value("blue"))]);
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
        let mut relayed = fields(b"Set-Cookie: a=1\r\nServer: them\r\nset-cookie: b=2");
        let id = HeaderName::from_static("x-request-id");
        assert!(relayed.set(id, HeaderValue::from_static("ours")).is_none());
        let mut map = HeaderMap::new();
        map.append("set-cookie", HeaderValue::from_static("cohort=green"));
        map.append("x-other", HeaderValue::from_static("mine"));
        map.append("set-cookie", HeaderValue::from_static("c=3"));
        relayed.move_into(&mut map);
        let cookies: Vec<_> = map.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2", "cohort=green", "c=3"]);
        assert_eq!(map["server"], "them");
        assert_eq!(map["x-request-id"], "ours");
        assert_eq!(map["x-other"], "mine");
        assert_eq!(map.len(), 7);
        assert!(relayed.iter().next().is_none() && relayed.set_fields().next().is_none());
    }
}
