//! Field errors: what is wrong, where (the field path and the document of the file), and what
//! is allowed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One problem with one field of one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The index of the document in its file (0-based), when the input had several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// The field path in Kubernetes' notation: `spec.template.spec.containers[0].image`.
    /// Empty when the whole document is meant.
    pub field: String,
    /// What is wrong and what is allowed: `must be 1-65535, got 70000`.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            document: None,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn in_document(mut self, document: usize) -> Self {
        self.document = Some(document);
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = self.document {
            write!(f, "document {d}: ")?;
        }
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Every error found in one input: nothing of an input with errors is stored.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
pub struct ManifestErrors(pub Vec<FieldError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
