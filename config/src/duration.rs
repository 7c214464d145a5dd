//! Durations as Gateway API writes them (GEP-2257): `30s`, `1h30m`, `500ms`.
//!
//! The format is `^([0-9]{1,5}(h|m|s|ms)){1,4}$`. The canonical form, used in
//! the table's version hash, spells the same duration the same way whatever
//! the input was (`90s` and `1m30s` both become `1m30s`).

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration in Gateway API notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GwDuration(pub Duration);

/// A string that is not a Gateway API duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: expected up to four parts of 1-5 digits with a unit h, m, s or ms, like \"30s\" or \"1h30m\""
)]
pub struct InvalidDuration {
    input: String,
}

// === impl GwDuration ===

impl GwDuration {
    /// The wrapped duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for GwDuration {
    type Err = InvalidDuration;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidDuration {
            input: input.to_owned(),
        };
        let bytes = input.as_bytes();
        let mut total = Duration::ZERO;
        let mut parts = 0;
        let mut i = 0;
        while i < bytes.len() {
            let digits_start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &input[digits_start..i];
            if digits.is_empty() || digits.len() > 5 {
                return Err(invalid());
            }
            let value: u64 = digits.parse().map_err(|_| invalid())?;
            let unit = if input[i..].starts_with("ms") {
                i += 2;
                Duration::from_millis(value)
            } else {
                let unit = match bytes.get(i) {
                    Some(b'h') => Duration::from_secs(value * 3600),
                    Some(b'm') => Duration::from_secs(value * 60),
                    Some(b's') => Duration::from_secs(value),
                    _ => return Err(invalid()),
                };
                i += 1;
                unit
            };
            total += unit;
            parts += 1;
        }
        // The cap keeps the canonical form re-parseable (at most five digits of hours).
        if parts == 0 || parts > 4 || total >= Duration::from_secs(100_000 * 3600) {
            return Err(invalid());
        }
        Ok(Self(total))
    }
}

impl fmt::Display for GwDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_ms = self.0.as_millis();
        if total_ms == 0 {
            return f.write_str("0s");
        }
        let hours = total_ms / 3_600_000;
        let minutes = total_ms / 60_000 % 60;
        let seconds = total_ms / 1000 % 60;
        let millis = total_ms % 1000;
        for (value, unit) in [(hours, "h"), (minutes, "m"), (seconds, "s"), (millis, "ms")] {
            if value > 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for GwDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GwDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Duration, InvalidDuration> {
        text.parse::<GwDuration>().map(GwDuration::get)
    }

    #[test]
    fn parses_gateway_api_forms() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse("1h1m1s1ms").unwrap(),
            Duration::from_millis(3_661_001)
        );
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_other_forms() {
        for bad in [
            "",
            "30",
            "s",
            "1.5s",
            "-1s",
            "123456s",
            "1d",
            "1h1m1s1ms1s",
            " 1s",
            "1S",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn canonical_form_is_the_same_for_equal_durations() {
        let a: GwDuration = "90s".parse().unwrap();
        let b: GwDuration = "1m30s".parse().unwrap();
        assert_eq!(a.to_string(), "1m30s");
        assert_eq!(b.to_string(), "1m30s");
        assert_eq!(
            "1500ms".parse::<GwDuration>().unwrap().to_string(),
            "1s500ms"
        );
        assert_eq!("0ms".parse::<GwDuration>().unwrap().to_string(), "0s");
    }
}
