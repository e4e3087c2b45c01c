//! Sizes written like `"64MiB"` and durations written like `"30s"`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A size in bytes; parsed from `"64MiB"`, `"1GiB"`, `"500KB"` or a plain integer.
///
/// Binary units (`KiB`, `MiB`, `GiB`, …) are powers of 1024, decimal units (`KB`, `MB`,
/// `GB`, …) powers of 1000, as `bytesize` defines them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_size(text).map(ByteSize)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Binary units, since that is what the examples use ("64MiB").
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

impl From<u64> for ByteSize {
    fn from(bytes: u64) -> Self {
        ByteSize(bytes)
    }
}

/// Parses `"64MiB"`, `"1 GiB"`, `"500KB"`, `"1048576"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let starts_with_digit = trimmed.chars().next().is_some_and(|c| c.is_ascii_digit());
    if !starts_with_digit {
        return Err(format!(
            "invalid size {text:?}: write a number with a unit, e.g. \"64MiB\", \"500KB\" or \"1GiB\""
        ));
    }
    trimmed
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| {
            format!(
                "invalid size {text:?}: write a number with a unit, e.g. \"64MiB\", \"500KB\" or \"1GiB\""
            )
        })
}

/// Parses `"30s"`, `"200ms"`, `"1m"` (a minute), `"7d"`, `"1h 30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|error| {
        format!(
            "invalid duration {text:?} ({error}): write a number with a unit, e.g. \"200ms\", \"30s\", \"1m\" or \"7d\""
        )
    })
}

impl serde::Serialize for ByteSize {
    /// A number of bytes: exact, and read back by [`ByteSize`]'s `Deserialize`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    /// A number of bytes, or a string with a unit as [`parse_size`] reads it.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64MiB\" or a number of bytes")
            }

            fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(bytes))
            }

            fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
                u64::try_from(bytes)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("a size cannot be negative, found {bytes}")))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ByteSize, E> {
                parse_size(text).map(ByteSize).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// serde for a [`Duration`] field (`#[serde(with = "crate::units::duration")]`): written
/// like `"30s"` ([`humantime::format_duration`]), read by [`parse_duration`].
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        duration: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*duration))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// serde for permission bits (`#[serde(with = "crate::units::octal_mode")]`): a string of
/// octal digits such as `"0640"`, since a TOML or YAML number would be read as decimal.
pub(crate) mod octal_mode {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(mode: &u32, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{mode:04o}"))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
        let text = String::deserialize(deserializer)?;
        let digits = text.trim().trim_start_matches("0o");
        u32::from_str_radix(digits, 8).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid mode {text:?}: write octal permission bits such as \"0600\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("500KB"), Ok(500_000));
        assert_eq!(parse_size("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("-1MiB").is_err());
        assert_eq!("2KiB".parse::<ByteSize>(), Ok(ByteSize(2048)));
        assert_eq!(ByteSize(64 << 20).to_string(), "64.0 MiB");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
