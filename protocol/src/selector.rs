//! Label selectors: the typed form of manifests (`matchLabels`, `matchExpressions`) and the
//! string form of `-l` and `?labelSelector=` (`app=web,tier in (a,b),!legacy`).
//!
//! String syntax, requirements separated by commas (all must hold):
//! - `key=value`, `key==value`: the label is present with this value;
//! - `key!=value`: the label is absent or has another value;
//! - `key in (v1,v2)`, `key notin (v1,v2)`: the value is (not) one of the set;
//! - `key`: the label is present; `!key`: the label is absent.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::validation;

/// A selector over labels. The empty selector matches everything; workloads reject it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One expression of a [`LabelSelector`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    #[serde(default)]
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The operator of a [`LabelSelectorRequirement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Why a selector string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector \"{input}\": {reason}")]
pub struct SelectorError {
    /// The selector as given.
    pub input: String,
    /// What is wrong, and where (a 0-based character position).
    pub reason: String,
}

impl LabelSelectorRequirement {
    /// Whether the labels satisfy this expression.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

impl LabelSelector {
    /// Whether it has neither labels nor expressions (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether the labels satisfy every requirement of the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| e.matches(labels))
    }

    /// Parses the string form (`a=b,c!=d,e in (x,y),f,!g`). The empty string gives the empty
    /// selector. Keys and values are checked against Kubernetes' label rules.
    pub fn parse(input: &str) -> Result<LabelSelector, SelectorError> {
        Parser::new(input).parse().map_err(|reason| SelectorError {
            input: input.to_string(),
            reason,
        })
    }
}

/// A selector in the form of a Service's `selector`: every label must be present with its
/// value. An empty map matches everything.
pub fn matches_labels(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl fmt::Display for LabelSelector {
    /// The string form, which [`LabelSelector::parse`] reads back to an equivalent selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            Ok(())
        };
        for (k, v) in &self.match_labels {
            sep(f)?;
            write!(f, "{k}={v}")?;
        }
        for e in &self.match_expressions {
            sep(f)?;
            match e.operator {
                SelectorOperator::Exists => write!(f, "{}", e.key)?,
                SelectorOperator::DoesNotExist => write!(f, "!{}", e.key)?,
                SelectorOperator::In => write!(f, "{} in ({})", e.key, e.values.join(","))?,
                SelectorOperator::NotIn => write!(f, "{} notin ({})", e.key, e.values.join(","))?,
            }
        }
        Ok(())
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

/// Characters of keys and values; everything else is syntax or an error.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

impl Parser {
    fn new(input: &str) -> Self {
        Parser {
            chars: input.chars().collect(),
            pos: 0,
        }
    }

    fn skip_ws(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn word(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(is_word_char) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn describe_here(&self) -> String {
        match self.peek() {
            Some(c) => format!("'{c}' at position {}", self.pos),
            None => "the end".to_string(),
        }
    }

    fn parse(mut self) -> Result<LabelSelector, String> {
        let mut sel = LabelSelector::default();
        self.skip_ws();
        if self.peek().is_none() {
            return Ok(sel);
        }
        loop {
            self.skip_ws();
            self.requirement(&mut sel)?;
            self.skip_ws();
            match self.peek() {
                None => return Ok(sel),
                Some(',') => self.pos += 1,
                Some(_) => {
                    return Err(format!(
                        "expected ',' or the end after a requirement, found {}",
                        self.describe_here()
                    ));
                }
            }
        }
    }

    fn key(&mut self) -> Result<String, String> {
        let at = self.pos;
        let key = self.word();
        if key.is_empty() {
            return Err(format!(
                "expected a label key, found {}",
                self.describe_here()
            ));
        }
        validation::check_label_key(&key)
            .map_err(|e| format!("label key \"{key}\" at position {at} {e}"))?;
        Ok(key)
    }

    fn value(&mut self) -> Result<String, String> {
        self.skip_ws();
        let at = self.pos;
        let value = self.word();
        validation::check_label_value(&value)
            .map_err(|e| format!("label value \"{value}\" at position {at} {e}"))?;
        Ok(value)
    }

    fn requirement(&mut self, sel: &mut LabelSelector) -> Result<(), String> {
        if self.peek() == Some('!') {
            self.pos += 1;
            self.skip_ws();
            let key = self.key()?;
            sel.match_expressions.push(LabelSelectorRequirement {
                key,
                operator: SelectorOperator::DoesNotExist,
                values: Vec::new(),
            });
            return Ok(());
        }
        let key = self.key()?;
        self.skip_ws();
        match self.peek() {
            None | Some(',') => {
                sel.match_expressions.push(LabelSelectorRequirement {
                    key,
                    operator: SelectorOperator::Exists,
                    values: Vec::new(),
                });
            }
            Some('=') => {
                self.pos += 1;
                if self.peek() == Some('=') {
                    self.pos += 1;
                }
                let value = self.value()?;
                // A second `key=` cannot live in matchLabels next to the first; as an
                // expression it keeps its meaning (both must hold).
                match sel.match_labels.entry(key) {
                    std::collections::btree_map::Entry::Occupied(e) => {
                        sel.match_expressions.push(LabelSelectorRequirement {
                            key: e.key().clone(),
                            operator: SelectorOperator::In,
                            values: vec![value],
                        });
                    }
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(value);
                    }
                }
            }
            Some('!') if self.chars.get(self.pos + 1) == Some(&'=') => {
                self.pos += 2;
                let value = self.value()?;
                sel.match_expressions.push(LabelSelectorRequirement {
                    key,
                    operator: SelectorOperator::NotIn,
                    values: vec![value],
                });
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let at = self.pos;
                let op = self.word();
                let operator = match op.as_str() {
                    "in" => SelectorOperator::In,
                    "notin" => SelectorOperator::NotIn,
                    _ => {
                        return Err(format!(
                            "expected an operator (=, ==, !=, in, notin) after \"{key}\", found \
                             \"{op}\" at position {at}"
                        ));
                    }
                };
                let values = self.value_set(&op)?;
                sel.match_expressions.push(LabelSelectorRequirement {
                    key,
                    operator,
                    values,
                });
            }
            Some(_) => {
                return Err(format!(
                    "expected an operator (=, ==, !=, in, notin), ',' or the end after \"{key}\", \
                     found {}",
                    self.describe_here()
                ));
            }
        }
        Ok(())
    }

    fn value_set(&mut self, op: &str) -> Result<Vec<String>, String> {
        self.skip_ws();
        if self.peek() != Some('(') {
            return Err(format!(
                "expected '(' after \"{op}\", found {}",
                self.describe_here()
            ));
        }
        self.pos += 1;
        let mut values = Vec::new();
        loop {
            let v = self.value()?;
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    self.pos += 1;
                    values.push(v);
                }
                Some(')') => {
                    self.pos += 1;
                    if !(v.is_empty() && values.is_empty()) {
                        values.push(v);
                    }
                    break;
                }
                _ => {
                    return Err(format!(
                        "expected ',' or ')' in the value set of \"{op}\", found {}",
                        self.describe_here()
                    ));
                }
            }
        }
        if values.is_empty() {
            return Err(format!("the value set of \"{op}\" must not be empty"));
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator() {
        let sel = LabelSelector::parse("a=b,c==d,e!=f,g in (x,y),h notin (z),i,!j").unwrap();
        assert_eq!(sel.match_labels, labels(&[("a", "b"), ("c", "d")]));
        let ops: Vec<_> = sel
            .match_expressions
            .iter()
            .map(|e| (e.key.as_str(), e.operator, e.values.join("|")))
            .collect();
        assert_eq!(
            ops,
            vec![
                ("e", SelectorOperator::NotIn, "f".to_string()),
                ("g", SelectorOperator::In, "x|y".to_string()),
                ("h", SelectorOperator::NotIn, "z".to_string()),
                ("i", SelectorOperator::Exists, String::new()),
                ("j", SelectorOperator::DoesNotExist, String::new()),
            ]
        );
    }

    #[test]
    fn matches_table() {
        let cases = [
            ("", &[][..], true),
            ("app=web", &[("app", "web")][..], true),
            ("app=web", &[("app", "db")][..], false),
            ("app=web", &[][..], false),
            ("app!=web", &[][..], true),
            ("app!=web", &[("app", "db")][..], true),
            ("app!=web", &[("app", "web")][..], false),
            ("tier in (a, b)", &[("tier", "b")][..], true),
            ("tier in (a,b)", &[("tier", "c")][..], false),
            ("tier in (a,b)", &[][..], false),
            ("tier notin (a,b)", &[][..], true),
            ("tier notin (a,b)", &[("tier", "a")][..], false),
            ("x", &[("x", "")][..], true),
            ("x", &[][..], false),
            ("!x", &[][..], true),
            ("!x", &[("x", "1")][..], false),
            ("a=1,a=2", &[("a", "1")][..], false),
            ("a=", &[("a", "")][..], true),
            (" app = web , !old ", &[("app", "web")][..], true),
            (
                "example.com/role=db",
                &[("example.com/role", "db")][..],
                true,
            ),
        ];
        for (input, set, want) in cases {
            let sel = LabelSelector::parse(input).unwrap();
            assert_eq!(sel.matches(&labels(set)), want, "{input} on {set:?}");
        }
    }

    #[test]
    fn errors_say_what_and_where() {
        let cases = [
            ("a=b,", "expected a label key, found the end"),
            (",a", "expected a label key, found ',' at position 0"),
            (
                "a b",
                "expected an operator (=, ==, !=, in, notin) after \"a\", found \"b\"",
            ),
            ("a in x", "expected '(' after \"in\""),
            ("a in (x", "expected ',' or ')'"),
            ("a in ()", "must not be empty"),
            ("a=b c", "expected ',' or the end"),
            ("a>1", "found '>' at position 1"),
            ("-a=b", "label key \"-a\" at position 0"),
            ("a=-b", "label value \"-b\" at position 2"),
            ("!", "expected a label key, found the end"),
        ];
        for (input, want) in cases {
            let err = LabelSelector::parse(input).unwrap_err();
            assert!(err.to_string().contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn display_reads_back() {
        for input in ["a=b,c!=d,e in (x,y),h notin (z),i,!j", "", "k=v"] {
            let sel = LabelSelector::parse(input).unwrap();
            let again = LabelSelector::parse(&sel.to_string()).unwrap();
            assert_eq!(sel, again, "{input} -> {sel}");
        }
    }

    #[test]
    fn typed_selector_matches() {
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]
        }))
        .unwrap();
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(!sel.matches(&labels(&[("app", "web")])));
        assert!(matches_labels(
            &labels(&[("app", "web")]),
            &labels(&[("app", "web"), ("x", "y")])
        ));
        assert!(!matches_labels(&labels(&[("app", "web")]), &labels(&[])));
    }
}
