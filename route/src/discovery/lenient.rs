//! Reading the configuration types off the wire without refusing fields this version lacks.
//!
//! The configuration types ([`crate::config`]) refuse unknown fields (`#[serde(deny_unknown_fields)]`),
//! so that a typo in a file is an error. On the discovery stream the same types must instead
//! ignore what they do not know, at any depth, so that a newer control service may add a field
//! without breaking older proxies.
//!
//! Rather than a second, lenient copy of every configuration type (which would have to be kept in
//! step with the first, and would drop silently any field added to one and not the other), the
//! stream's services and backends are read through [`Lenient`]: a deserializer over a JSON value
//! that hands each struct only the fields it declares. `deny_unknown_fields` then never sees an
//! unknown one, and every type nested anywhere below gets the same treatment without being named
//! here. Unknown *values* (an enum variant this version lacks) are still errors.

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::Value;

/// Reads a `T` from whatever `d` holds, ignoring fields that `T` (or any type inside it) does not
/// declare. For `#[serde(deserialize_with = ...)]` on wire fields.
pub(crate) fn deserialize<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<T, D::Error> {
    let value = Value::deserialize(d)?;
    T::deserialize(Lenient(value)).map_err(de::Error::custom)
}

/// A deserializer over a JSON value that drops each object's keys a struct does not declare.
pub(crate) struct Lenient(pub(crate) Value);

impl<'de> Deserializer<'de> for Lenient {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Items(items.into_iter())),
            Value::Object(map) => visitor.visit_map(Entries { iter: map.into_iter(), fields: None, value: None }),
            scalar => scalar.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(map) => {
                visitor.visit_map(Entries { iter: map.into_iter(), fields: Some(fields), value: None })
            }
            other => Lenient(other).deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Lenient(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    // Enums in the configuration are plain strings (`p2c`, `http2`): read as JSON reads them.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

/// The elements of an array, each read leniently.
struct Items(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Items {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Self::Error> {
        self.0.next().map(|v| seed.deserialize(Lenient(v))).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// The entries of an object (only the declared `fields`, when reading a struct), values read
/// leniently.
struct Entries {
    iter: serde_json::map::IntoIter,
    fields: Option<&'static [&'static str]>,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        for (key, value) in self.iter.by_ref() {
            if self.fields.is_none_or(|f| f.contains(&key.as_str())) {
                self.value = Some(value);
                return seed.deserialize(Value::String(key)).map(Some);
            }
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        match self.value.take() {
            Some(v) => seed.deserialize(Lenient(v)),
            None => Err(de::Error::custom("a map value was read before its key")),
        }
    }
}
