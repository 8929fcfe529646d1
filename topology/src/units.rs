//! Durations and sizes as people write them: `"500ms"`, `"7d"`, `"64KiB"`, `"1GB"`.
//!
//! The deployment file and CLI flags (`--retention 7d`) share these parsers so that a
//! value accepted in one place is accepted everywhere. The formatters print the shortest
//! exact form, so `format_*(parse_*(s))` parses back to the same value: `to_toml` relies
//! on that for its round trip.

use std::time::Duration;

use crate::TopologyError;

/// Hint appended to every duration error, so the user sees the accepted shape.
const DURATION_HINT: &str = "write a number and a unit, like 500ms, 5s, 10m, 2h or 7d";
/// Hint appended to every size error.
const SIZE_HINT: &str =
    "write a number of bytes with an optional unit, like 512, 64KiB, 1MiB, 1GiB or 1MB";

/// Parses a human duration (`"500ms"`, `"5s"`, `"10m"`, `"7d"`, `"1h 30m"`).
///
/// Exists so the deployment file and CLI flags accept the same spellings and reject bad
/// ones with one message that says what to write instead.
pub fn parse_duration(text: &str) -> Result<Duration, TopologyError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(TopologyError::InvalidDuration {
            input: text.to_owned(),
            reason: format!("it is empty; {DURATION_HINT}"),
        });
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(TopologyError::InvalidDuration {
            input: text.to_owned(),
            reason: format!("it has no unit; {DURATION_HINT}"),
        });
    }
    humantime::parse_duration(trimmed).map_err(|err| TopologyError::InvalidDuration {
        input: text.to_owned(),
        reason: format!("{err}; {DURATION_HINT}"),
    })
}

/// Formats a duration in the largest unit that represents it exactly (`"7d"`, `"90s"`,
/// `"1500ms"`), so that [`parse_duration`] gives back the same value.
pub fn format_duration(duration: Duration) -> String {
    const UNITS: [(u128, &str); 7] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (scale, unit) in UNITS {
        if nanos.is_multiple_of(scale) {
            return format!("{}{unit}", nanos / scale);
        }
    }
    format!("{nanos}ns")
}

/// Parses a size in bytes: `"512"`, `"64KiB"`, `"1MiB"`, `"1GiB"`, `"1TiB"` (binary) or
/// `"1KB"`, `"1MB"`, `"1GB"`, `"1TB"` (decimal); a `B` suffix and a space are allowed.
///
/// Exists because byte counts like 1073741824 are hard to read and easy to get wrong.
pub fn parse_size(text: &str) -> Result<u64, TopologyError> {
    let bad = |reason: String| TopologyError::InvalidSize {
        input: text.to_owned(),
        reason,
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    if digits.is_empty() {
        return Err(bad(format!("it does not start with a number; {SIZE_HINT}")));
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| bad(format!("the number is too large; {SIZE_HINT}")))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(bad(format!(
                "unknown unit {other:?} (units: B, KiB, MiB, GiB, TiB, KB, MB, GB, TB); {SIZE_HINT}"
            )));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| bad(format!("it does not fit in 64 bits; {SIZE_HINT}")))
}

/// Formats a size with the largest unit that represents it exactly (`"1GiB"`, `"10MB"`,
/// `"1000"`), so that [`parse_size`] gives back the same value.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 8] = [
        (1 << 40, "TiB"),
        (1_000_000_000_000, "TB"),
        (1 << 30, "GiB"),
        (1_000_000_000, "GB"),
        (1 << 20, "MiB"),
        (1_000_000, "MB"),
        (1 << 10, "KiB"),
        (1_000, "KB"),
    ];
    if bytes == 0 {
        return "0".to_owned();
    }
    for (scale, unit) in UNITS {
        if bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    bytes.to_string()
}

/// Serde helpers that read and write durations as human strings.
pub(crate) mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(crate) fn serialize<S: Serializer>(value: &Duration, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&super::format_duration(*value))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(de)?;
        super::parse_duration(&text).map_err(D::Error::custom)
    }
}

/// Serde helpers for sizes written as human strings (integers are accepted on input).
pub(crate) mod serde_size {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    use crate::schema::SizeLit;

    pub(crate) fn serialize<S: Serializer>(value: &u64, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&super::format_size(*value))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
        match SizeLit::deserialize(de)? {
            SizeLit::Bytes(n) => u64::try_from(n).map_err(D::Error::custom),
            SizeLit::Text(text) => super::parse_size(&text).map_err(D::Error::custom),
        }
    }
}

/// `retention_time`: a duration, or `"forever"` (`None`).
pub(crate) mod serde_retention_time {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => ser.serialize_str(&super::format_duration(*d)),
            None => ser.serialize_str("forever"),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(de)?;
        if text == "forever" {
            return Ok(None);
        }
        super::parse_duration(&text)
            .map(Some)
            .map_err(D::Error::custom)
    }
}

/// `retention_bytes`: a size, or `"unlimited"` (`None`).
pub(crate) mod serde_retention_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    use crate::schema::SizeLit;

    pub(crate) fn serialize<S: Serializer>(value: &Option<u64>, ser: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(n) => ser.serialize_str(&super::format_size(*n)),
            None => ser.serialize_str("unlimited"),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
        match SizeLit::deserialize(de)? {
            SizeLit::Bytes(n) => u64::try_from(n).map(Some).map_err(D::Error::custom),
            SizeLit::Text(text) if text == "unlimited" => Ok(None),
            SizeLit::Text(text) => super::parse_size(&text).map(Some).map_err(D::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_people_write_them() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
    }

    #[test]
    fn durations_without_unit_or_with_bad_unit_are_rejected_with_a_hint() {
        let err = parse_duration("10").unwrap_err().to_string();
        assert!(err.contains("no unit") && err.contains("500ms"), "{err}");
        let err = parse_duration("7x").unwrap_err().to_string();
        assert!(err.contains("\"7x\"") && err.contains("7d"), "{err}");
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn durations_format_back_to_the_same_value() {
        for text in ["7d", "90s", "1500ms", "1h", "3ns", "0s", "25h"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64KiB").unwrap(), 65_536);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("1KB").unwrap(), 1_000);
        assert_eq!(parse_size("1MB").unwrap(), 1_000_000);
        assert_eq!(parse_size("10 GiB").unwrap(), 10 << 30);
    }

    #[test]
    fn sizes_with_bad_units_or_overflow_are_rejected_naming_the_input() {
        let err = parse_size("10GiG").unwrap_err().to_string();
        assert!(err.contains("\"10GiG\"") && err.contains("GiG"), "{err}");
        assert!(
            parse_size("GiB")
                .unwrap_err()
                .to_string()
                .contains("number")
        );
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .to_string()
                .contains("64 bits")
        );
    }

    #[test]
    fn sizes_format_back_to_the_same_value() {
        for n in [0, 1, 512, 1000, 1024, 1 << 30, 10_000_000, 1_536, 123_457] {
            assert_eq!(parse_size(&format_size(n)).unwrap(), n, "{n}");
        }
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(1_000_000), "1MB");
    }
}
