//! The few pieces of JSON the access log writes, by hand: an object's
//! members, escaped strings and an RFC 3339 timestamp (humantime's).

use std::io::Write;
use std::time::SystemTime;

use serde::Serialize;

/// A JSON object being written, one member at a time.
pub(super) struct JsonObject {
    out: Vec<u8>,
}

impl JsonObject {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self {
            out: Vec::with_capacity(capacity),
        }
    }

    /// Starts a member: `{` or `,`, then the key (plain ASCII, ours).
    pub(super) fn key(&mut self, key: &str) {
        self.out.push(if self.out.is_empty() { b'{' } else { b',' });
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    pub(super) fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        push_json_string(&mut self.out, value);
    }

    /// A time as an RFC 3339 string (UTC, milliseconds).
    pub(super) fn timestamp(&mut self, key: &str, time: SystemTime) {
        self.key(key);
        self.out.push(b'"');
        push_rfc3339(&mut self.out, time);
        self.out.push(b'"');
    }

    pub(super) fn optional_str(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(value) => self.str(key, value),
            None => {
                self.key(key);
                self.out.extend_from_slice(b"null");
            }
        }
    }

    /// A number, a boolean or an optional one, as serde_json writes it.
    pub(super) fn value(&mut self, key: &str, value: impl Serialize) {
        self.key(key);
        // Writing to a Vec cannot fail, and these types always serialise.
        let _ = serde_json::to_writer(&mut self.out, &value);
    }

    pub(super) fn end(mut self) -> Vec<u8> {
        if self.out.is_empty() {
            self.out.push(b'{');
        }
        self.out.extend_from_slice(b"}\n");
        self.out
    }
}

/// `value` as a JSON string, quotes included.
fn push_json_string(out: &mut Vec<u8>, value: &str) {
    // One pass with no early exit (no branch per byte): most values need
    // no escape and are then copied whole.
    let plain = value
        .bytes()
        .fold(true, |plain, byte| plain & !needs_escape(byte));
    out.push(b'"');
    if plain {
        out.extend_from_slice(value.as_bytes());
    } else {
        // Byte by byte is safe for UTF-8: every byte of a multi-byte
        // character is 0x80 or above and is copied as it is.
        for byte in value.bytes() {
            match byte {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                byte if byte < 0x20 => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(byte >> 4)]);
                    out.push(HEX[usize::from(byte & 0xf)]);
                }
                byte => out.push(byte),
            }
        }
    }
    out.push(b'"');
}

/// What JSON does not allow unescaped in a string.
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// `2026-11-23T21:04:05.123Z` (UTC, milliseconds), by humantime as in
/// the control plane. A clock before 1970 is written as 1970 (humantime
/// panics on it); past year 9999 humantime refuses and the string is left
/// empty, still valid JSON.
fn push_rfc3339(out: &mut Vec<u8>, time: SystemTime) {
    let time = time.max(SystemTime::UNIX_EPOCH);
    let _ = write!(out, "{}", humantime::format_rfc3339_millis(time));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339_utc() {
        let at = |secs: u64, millis: u64| {
            let mut out = Vec::new();
            push_rfc3339(
                &mut out,
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis),
            );
            String::from_utf8(out).unwrap()
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_795_467_845, 123), "2026-11-23T21:04:05.123Z");
        let mut before_1970 = Vec::new();
        push_rfc3339(
            &mut before_1970,
            SystemTime::UNIX_EPOCH - Duration::from_secs(1),
        );
        assert_eq!(before_1970, b"1970-01-01T00:00:00.000Z");
    }

    /// Strings that need escaping (quotes, backslashes, control characters)
    /// read back as themselves.
    #[test]
    fn escaped_strings_read_back_as_written() {
        let nasty = "q\"b\\s\nn\rr\tt\u{1}\u{8}\u{c}\u{1f}\u{7f}é✓/";
        let mut ours = Vec::new();
        push_json_string(&mut ours, nasty);
        let ours: String = serde_json::from_slice(&ours).unwrap();
        assert_eq!(ours, nasty);
    }
}
