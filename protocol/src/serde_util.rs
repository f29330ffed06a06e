//! Small serde helpers shared by the typed kinds.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::{Deserialize, Deserializer, Serializer};

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn is_zero(v: &i32) -> bool {
    *v == 0
}

pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Reads an optional enum that Kubernetes also accepts as `""`, meaning unset
/// (`type: ""` of a hostPath, `effect: ""` of a toleration).
pub(crate) fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => T::deserialize(s.into_deserializer()).map(Some),
    }
}

/// The base64 engine for Secret and ConfigMap data: the standard alphabet, padding optional
/// on input (Go's decoder is as lenient about line breaks, which are removed first).
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    // The value is not echoed: it may be a secret written in clear by mistake.
    BASE64.decode(compact.as_bytes()).map_err(|e| {
        let why = match e {
            base64::DecodeError::InvalidByte(at, _) => {
                format!("a character at position {at} is not in the base64 alphabet")
            }
            base64::DecodeError::InvalidLength(_) => "its length is not valid".to_string(),
            base64::DecodeError::InvalidLastSymbol(at, _) => {
                format!("the last character (position {at}) is not valid")
            }
            base64::DecodeError::InvalidPadding => "its '=' padding is not valid".to_string(),
        };
        format!(
            "must be base64 (as the `base64` command encodes), but {why}; write clear text in \
             stringData instead"
        )
    })
}

/// One base64 value; its own type so that a decoding error carries the key's path.
struct Base64Value(Vec<u8>);

impl<'de> Deserialize<'de> for Base64Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Base64Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Base64Value, E> {
                decode_base64(v).map(Base64Value).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// `with` module for `BTreeMap<String, Vec<u8>>` written as a map of base64 strings.
pub(crate) mod base64_map {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        map: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k, encode_base64(v))))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let m = BTreeMap::<String, Base64Value>::deserialize(d)?;
        Ok(m.into_iter().map(|(k, v)| (k, v.0)).collect())
    }
}
