//! Kubernetes quantities: `100m` of CPU, `128Mi` of memory, `1e3`, `0.5`.
//!
//! The grammar is Kubernetes': an optionally signed decimal number (`1`, `1.5`, `.5`, `2.`)
//! followed by at most one suffix:
//! - decimal SI: `n` (10⁻⁹), `u` (10⁻⁶), `m` (10⁻³), none, `k` (10³), `M`, `G`, `T`, `P`, `E`
//!   (10¹⁸);
//! - binary SI: `Ki` (2¹⁰), `Mi`, `Gi`, `Ti`, `Pi`, `Ei` (2⁶⁰);
//! - a decimal exponent: `e` or `E` followed by a signed integer (`1e3`, `5E-3`).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A quantity that parsed, kept as it was written so that it serializes unchanged.
///
/// Two quantities are equal when they were written the same way (`1` and `1000m` are not
/// equal; compare amounts with [`Quantity::value_cmp`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quantity {
    text: String,
    parsed: Parsed,
}

/// `digits × 10^scale10 × 2^pow2`, with a sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Parsed {
    negative: bool,
    digits: u128,
    scale10: i32,
    pow2: u32,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid quantity \"{input}\": {reason}; a quantity is a number with an optional suffix \
     such as 100m, 0.5, 128Mi, 1Gi, 1G, 500k or 1e3"
)]
pub struct QuantityError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Significant digits kept exactly: 10^38 still fits in a `u128`.
const MAX_DIGITS: usize = 38;
/// Bound on the decimal exponent, far beyond any real quantity, so arithmetic cannot overflow.
const MAX_SCALE: i64 = 1000;

impl Quantity {
    /// Parses a quantity in Kubernetes' syntax.
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let parsed = parse(text).map_err(|reason| QuantityError {
            input: text.to_string(),
            reason,
        })?;
        Ok(Quantity {
            text: text.to_string(),
            parsed,
        })
    }

    /// The quantity as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the amount is below zero (resource amounts must not be).
    pub fn is_negative(&self) -> bool {
        self.parsed.negative && self.parsed.digits != 0
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.parsed.digits == 0
    }

    /// The amount in thousandths, rounded up as Kubernetes rounds: CPU `100m` → 100, `1` →
    /// 1000, `0.5` → 500. Saturates at the bounds of `i64`.
    pub fn millis(&self) -> i64 {
        saturate(self.parsed.scaled_ceil(3), self.parsed.negative)
    }

    /// The amount as a whole number, rounded up: memory `128Mi` → 134217728, `1G` →
    /// 1000000000. Saturates at the bounds of `i64`.
    pub fn bytes(&self) -> i64 {
        saturate(self.parsed.scaled_ceil(0), self.parsed.negative)
    }

    /// Compares the amounts (to nano precision), whatever their notation: `1` equals `1000m`.
    pub fn value_cmp(&self, other: &Quantity) -> Ordering {
        let key = |q: &Quantity| -> (i8, i128) {
            match q.parsed.scaled_ceil(9) {
                Some(v) => (0, v),
                // Too large to scale: beyond every scalable amount, by its sign.
                None if q.parsed.negative => (-1, 0),
                None => (1, 0),
            }
        };
        key(self).cmp(&key(other))
    }
}

fn saturate(v: Option<i128>, negative: bool) -> i64 {
    match v {
        Some(v) => i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX }),
        None if negative => i64::MIN,
        None => i64::MAX,
    }
}

impl Parsed {
    /// `ceil(|value| × 10^k)` with the value's sign; `None` when it does not fit.
    fn scaled_ceil(&self, k: i32) -> Option<i128> {
        if self.digits == 0 {
            return Some(0);
        }
        let n = self.digits.checked_mul(1u128.checked_shl(self.pow2)?)?;
        let t = self.scale10.checked_add(k)?;
        let magnitude = if t >= 0 {
            n.checked_mul(10u128.checked_pow(u32::try_from(t).ok()?)?)?
        } else {
            match 10u128.checked_pow(t.unsigned_abs()) {
                Some(d) => n / d + u128::from(n % d != 0),
                // The divisor exceeds any u128, so the quotient is below 1: it rounds up to 1.
                None => 1,
            }
        };
        let v = i128::try_from(magnitude).ok()?;
        Some(if self.negative { -v } else { v })
    }
}

fn parse(text: &str) -> Result<Parsed, String> {
    if text.is_empty() {
        return Err("it is empty".into());
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = &text[int_start..i];
    let mut frac_digits = "";
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = &text[frac_start..i];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err("it does not start with a number".into());
    }
    let suffix = &text[i..];
    let (exp10, pow2) = parse_suffix(suffix)?;

    // Normalise the digits: no leading zeros, trailing zeros moved into the exponent, so
    // that `1000000Mi` and `1.50000` keep few significant digits.
    let all: String = format!("{int_digits}{frac_digits}");
    let trimmed = all.trim_start_matches('0');
    let significant = trimmed.trim_end_matches('0');
    let trailing_zeros = trimmed.len() - significant.len();
    if significant.len() > MAX_DIGITS {
        return Err(format!("it has more than {MAX_DIGITS} significant digits"));
    }
    let digits = if significant.is_empty() {
        0
    } else {
        significant
            .parse::<u128>()
            .map_err(|_| "it is not a number".to_string())?
    };
    let frac_len = i64::try_from(frac_digits.len()).unwrap_or(i64::MAX);
    let zeros = i64::try_from(trailing_zeros).unwrap_or(i64::MAX);
    let scale = exp10.saturating_sub(frac_len).saturating_add(zeros);
    if digits != 0 && scale.abs() > MAX_SCALE {
        return Err("its exponent is out of range".into());
    }
    let scale10 = i32::try_from(scale.clamp(-MAX_SCALE, MAX_SCALE)).unwrap_or(0);
    Ok(Parsed {
        negative,
        digits,
        scale10,
        pow2,
    })
}

/// The decimal exponent and binary power of a suffix.
fn parse_suffix(suffix: &str) -> Result<(i64, u32), String> {
    let fixed = match suffix {
        "" => Some((0, 0)),
        "n" => Some((-9, 0)),
        "u" => Some((-6, 0)),
        "m" => Some((-3, 0)),
        "k" => Some((3, 0)),
        "M" => Some((6, 0)),
        "G" => Some((9, 0)),
        "T" => Some((12, 0)),
        "P" => Some((15, 0)),
        "E" => Some((18, 0)),
        "Ki" => Some((0, 10)),
        "Mi" => Some((0, 20)),
        "Gi" => Some((0, 30)),
        "Ti" => Some((0, 40)),
        "Pi" => Some((0, 50)),
        "Ei" => Some((0, 60)),
        _ => None,
    };
    if let Some(f) = fixed {
        return Ok(f);
    }
    if let Some(exp) = suffix.strip_prefix(['e', 'E']) {
        let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        if !digits.is_empty() && digits.len() <= 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
            return exp
                .parse::<i64>()
                .map(|e| (e, 0))
                .map_err(|_| format!("its exponent \"{exp}\" is not an integer"));
        }
        return Err(format!("its exponent \"{exp}\" is not an integer"));
    }
    Err(format!(
        "unknown suffix \"{suffix}\" (allowed: n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, \
         Ei, or e<exponent>; suffixes are case-sensitive)"
    ))
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity (a string such as \"100m\" or \"128Mi\", or a number)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Quantity::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                if !v.is_finite() {
                    return Err(E::custom(format!(
                        "invalid quantity {v}: not a finite number"
                    )));
                }
                // Display never uses an exponent, so the text is in the quantity grammar.
                self.visit_str(&v.to_string())
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
    fn millis_table() {
        let cases = [
            ("100m", 100),
            ("1", 1000),
            ("0.5", 500),
            (".5", 500),
            ("2.", 2000),
            ("1.5", 1500),
            ("250m", 250),
            ("0", 0),
            ("1k", 1_000_000),
            ("1u", 1),
            ("1n", 1),
            ("1500n", 1),
            ("0.0001", 1),
            ("1e3", 1_000_000),
            ("1e-3", 1),
            ("+2", 2000),
            ("-100m", -100),
            ("1Ki", 1_024_000),
            ("100E", i64::MAX),
        ];
        for (input, want) in cases {
            assert_eq!(Quantity::parse(input).unwrap().millis(), want, "{input}");
        }
    }

    #[test]
    fn bytes_table() {
        let cases = [
            ("128Mi", 134_217_728),
            ("1Gi", 1_073_741_824),
            ("1G", 1_000_000_000),
            ("500k", 500_000),
            ("1e3", 1000),
            ("1E3", 1000),
            ("1.5Gi", 1_610_612_736),
            ("1Ki", 1024),
            ("1Ti", 1_099_511_627_776),
            ("1Ei", 1_152_921_504_606_846_976),
            ("1E", 1_000_000_000_000_000_000),
            ("8Ei", i64::MAX),
            ("100m", 1),
            ("0.1Ki", 103),
            ("1000000000000000000000000000000000000000000000", i64::MAX),
            ("1e999", i64::MAX),
            ("1e-999", 1),
            ("0e999999", 0),
        ];
        for (input, want) in cases {
            assert_eq!(Quantity::parse(input).unwrap().bytes(), want, "{input}");
        }
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        let cases = [
            ("", "empty"),
            ("abc", "does not start with a number"),
            ("1.2.3", "unknown suffix"),
            ("10MB", "unknown suffix \"MB\""),
            ("1mi", "unknown suffix"),
            ("1 Gi", "unknown suffix"),
            ("1e", "exponent"),
            ("1e+", "exponent"),
            ("1ex", "exponent"),
            (".", "does not start with a number"),
            ("-", "does not start with a number"),
            ("1e1000000000", "exponent"),
            ("1e5000", "out of range"),
            (
                "1234567890123456789012345678901234567891",
                "significant digits",
            ),
        ];
        for (input, want) in cases {
            let err = Quantity::parse(input).unwrap_err();
            assert!(err.to_string().contains(want), "{input}: {err}");
            assert_eq!(err.input, input);
        }
    }

    #[test]
    fn keeps_the_text_and_reads_numbers() {
        for (json, text) in [
            (serde_json::json!("100m"), "100m"),
            (serde_json::json!(1), "1"),
            (serde_json::json!(0.5), "0.5"),
            (serde_json::json!(1e3), "1000"),
        ] {
            let q: Quantity = serde_json::from_value(json).unwrap();
            assert_eq!(q.as_str(), text);
            assert_eq!(serde_json::to_value(&q).unwrap(), serde_json::json!(text));
        }
        assert!(serde_json::from_value::<Quantity>(serde_json::json!(true)).is_err());
        assert!(serde_json::from_value::<Quantity>(serde_json::json!("1x")).is_err());
    }

    #[test]
    fn compares_amounts() {
        let q = |s: &str| Quantity::parse(s).unwrap();
        assert_eq!(q("1").value_cmp(&q("1000m")), Ordering::Equal);
        assert_eq!(q("1Gi").value_cmp(&q("1G")), Ordering::Greater);
        assert_eq!(q("100Mi").value_cmp(&q("200Mi")), Ordering::Less);
        assert_eq!(q("-1").value_cmp(&q("0")), Ordering::Less);
        assert_eq!(q("1e999").value_cmp(&q("1Ei")), Ordering::Greater);
        assert_ne!(q("1"), q("1000m"));
        assert!(q("-1").is_negative());
        assert!(!q("-0").is_negative());
        assert!(q("0Gi").is_zero());
    }
}
