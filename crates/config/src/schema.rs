//! What the config types say about themselves through their serde derives: the keys of a
//! struct and the names of an enum's values.
//!
//! The typed structs in this crate are the one definition of every key. The loader's
//! validator asks them for their keys ([`fields`]) instead of keeping lists of its own, so
//! a key added to a struct is known to the validator (and to its "did you mean") at once,
//! and the test that holds `config/reference.toml` against the types uses the same lists.

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

/// The keys of the struct `T` as serde reads them (renames applied, skipped fields left
/// out), in declaration order. Empty when `T` does not deserialize as a struct.
pub fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    probe::<T>(Wanted::Struct)
}

/// The names of the values of the enum `T` as serde reads them (e.g. `["text", "json"]`
/// with `rename_all = "snake_case"`), in declaration order. Empty when `T` does not
/// deserialize as an enum.
pub fn variants<T: DeserializeOwned>() -> &'static [&'static str] {
    probe::<T>(Wanted::Enum)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Struct,
    Enum,
}

fn probe<T: DeserializeOwned>(wanted: Wanted) -> &'static [&'static str] {
    let mut found: &'static [&'static str] = &[];
    // The probe always fails on purpose, right after serde has named what it expects.
    let _ = T::deserialize(Probe {
        wanted,
        found: &mut found,
    });
    found
}

/// A deserializer with no data: it records the field or variant names a derived
/// `Deserialize` hands to `deserialize_struct` / `deserialize_enum`, then stops.
struct Probe<'a> {
    wanted: Wanted,
    found: &'a mut &'static [&'static str],
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only structs and enums name their keys"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        if self.wanted == Wanted::Struct {
            *self.found = fields;
        }
        Err(de::Error::custom("probed"))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        if self.wanted == Wanted::Enum {
            *self.found = variants;
        }
        Err(de::Error::custom("probed"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LogFormat, OnError, RetryConfig, ServerTlsConfig};

    #[test]
    fn structs_name_their_keys_and_enums_their_values() {
        assert_eq!(fields::<RetryConfig>(), ["max_attempts", "initial", "max"]);
        assert_eq!(fields::<ServerTlsConfig>(), ["cert", "key"]);
        assert_eq!(variants::<LogFormat>(), ["text", "json"]);
        assert_eq!(variants::<OnError>(), ["dead_letter", "drop", "stop"]);
        assert!(fields::<LogFormat>().is_empty());
        assert!(variants::<String>().is_empty());
    }
}
