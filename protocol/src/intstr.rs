//! [`IntOrString`]: a field that holds either a number or a name, as Kubernetes' `intstr`
//! (`targetPort: 8080` or `targetPort: http`; `maxSurge: 1` or `maxSurge: 25%`).

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number or a string. Which one was written is kept, so that `8080` and `"8080"` stay
/// distinct as they are in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IntOrString {
    Int(i32),
    String(String),
}

impl IntOrString {
    /// The number, when this is one.
    pub fn as_int(&self) -> Option<i32> {
        match self {
            IntOrString::Int(i) => Some(*i),
            IntOrString::String(_) => None,
        }
    }

    /// The string, when this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            IntOrString::Int(_) => None,
            IntOrString::String(s) => Some(s),
        }
    }

    /// The percentage of a string such as `25%`; `None` for a number or any other string.
    pub fn percent(&self) -> Option<i32> {
        let s = self.as_str()?;
        let digits = s.strip_suffix('%')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// Checks that this is a non-negative number or a percentage (`0%`..; at most `100%` when
    /// `max_100`), as rolling-update fields require. The message says what was given.
    pub fn check_int_or_percent(&self, max_100: bool) -> Result<(), String> {
        match self {
            IntOrString::Int(i) if *i < 0 => Err(format!("must be 0 or more, got {i}")),
            IntOrString::Int(_) => Ok(()),
            IntOrString::String(s) => match self.percent() {
                None => Err(format!(
                    "must be an integer or a percentage such as \"25%\", got \"{s}\""
                )),
                Some(p) if max_100 && p > 100 => Err(format!("must be at most 100%, got \"{s}\"")),
                Some(_) => Ok(()),
            },
        }
    }

    /// The absolute value for a total: the number itself, or the percentage of `total`,
    /// rounded up or down (rolling updates round `maxSurge` up and `maxUnavailable` down, as
    /// Kubernetes does). `None` for a string that is not a percentage.
    pub fn scaled_value(&self, total: i32, round_up: bool) -> Option<i32> {
        match self {
            IntOrString::Int(i) => Some(*i),
            IntOrString::String(_) => {
                let p = i64::from(self.percent()?);
                let product = p * i64::from(total);
                let v = if round_up {
                    (product + 99).div_euclid(100)
                } else {
                    product.div_euclid(100)
                };
                i32::try_from(v).ok()
            }
        }
    }

    pub(crate) fn zero() -> IntOrString {
        IntOrString::Int(0)
    }

    pub(crate) fn is_unset(&self) -> bool {
        matches!(self, IntOrString::Int(0))
            || matches!(self, IntOrString::String(s) if s.is_empty())
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl From<i32> for IntOrString {
    fn from(i: i32) -> Self {
        IntOrString::Int(i)
    }
}

impl From<&str> for IntOrString {
    fn from(s: &str) -> Self {
        IntOrString::String(s.to_string())
    }
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(i) => s.serialize_i32(*i),
            IntOrString::String(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A hand-written visitor rather than `#[serde(untagged)]`, whose error ("data did not
        // match any variant") tells the user nothing.
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("integer {v} is out of range")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("integer {v} is out of range")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn reads_numbers_and_strings() {
        let v: IntOrString = serde_json::from_value(serde_json::json!(8080)).unwrap();
        assert_eq!(v, IntOrString::Int(8080));
        let v: IntOrString = serde_json::from_value(serde_json::json!("http")).unwrap();
        assert_eq!(v, IntOrString::String("http".into()));
        assert!(serde_json::from_value::<IntOrString>(serde_json::json!(1.5)).is_err());
        assert!(serde_json::from_value::<IntOrString>(serde_json::json!(1u64 << 40)).is_err());
        assert_eq!(
            serde_json::to_value(IntOrString::Int(3)).unwrap(),
            serde_json::json!(3)
        );
    }

    #[test]
    fn percentages() {
        let cases: &[(IntOrString, bool, Result<(), ()>)] = &[
            ("25%".into(), true, Ok(())),
            ("0%".into(), true, Ok(())),
            ("100%".into(), true, Ok(())),
            ("150%".into(), true, Err(())),
            ("150%".into(), false, Ok(())),
            ("%".into(), false, Err(())),
            ("25".into(), false, Err(())),
            ("-5%".into(), false, Err(())),
            ("abc".into(), false, Err(())),
            (3.into(), false, Ok(())),
            ((-1).into(), false, Err(())),
        ];
        for (v, max, want) in cases {
            assert_eq!(v.check_int_or_percent(*max).map_err(|_| ()), *want, "{v}");
        }
    }

    #[test]
    fn scaling_rounds_as_kubernetes() {
        let q = IntOrString::from("25%");
        assert_eq!(q.scaled_value(3, true), Some(1));
        assert_eq!(q.scaled_value(3, false), Some(0));
        assert_eq!(q.scaled_value(4, false), Some(1));
        assert_eq!(IntOrString::Int(2).scaled_value(10, true), Some(2));
        assert_eq!(IntOrString::from("x").scaled_value(10, true), None);
    }
}
