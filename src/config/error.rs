//! Error types of the configuration module.

use std::fmt;

/// Everything that can go wrong while reading, decoding or validating a
/// KubeProxyConfiguration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{origin}: failed to read config file: {source}")]
    Io {
        origin: String,
        #[source]
        source: std::io::Error,
    },

    /// The YAML was malformed or did not match the v1alpha1 schema (unknown
    /// field, wrong type, wrong apiVersion/kind, bad duration string...).
    #[error("{}", DecodeDisplay(self))]
    Decode {
        origin: String,
        /// 1-based; `None` when the problem has no position (missing field).
        line: Option<usize>,
        column: Option<usize>,
        /// Dotted camelCase path such as `iptables.masqueradeBit`; empty for
        /// the document root.
        path: String,
        message: String,
    },

    /// The decoded configuration failed validation. Holds every problem
    /// found, not just the first.
    #[error("{}", InvalidDisplay { origin, errors })]
    Invalid {
        /// File name, or empty when validating a config built elsewhere.
        origin: String,
        errors: Vec<FieldError>,
    },

    /// A Go duration string (e.g. from a command-line flag) was malformed.
    #[error("invalid duration {value:?}: {message}")]
    InvalidDuration { value: String, message: String },

    /// A `--feature-gates` value was malformed.
    #[error("invalid feature gates {value:?}: {message}")]
    InvalidFeatureGates { value: String, message: String },
}

impl ConfigError {
    /// The individual validation problems, empty for other kinds of error.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }
}

struct DecodeDisplay<'a>(&'a ConfigError);

impl fmt::Display for DecodeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ConfigError::Decode {
            origin,
            line,
            column,
            path,
            message,
        } = self.0
        else {
            return Ok(());
        };
        f.write_str(origin)?;
        if let Some(line) = line {
            write!(f, ":{line}")?;
            if let Some(column) = column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if !path.is_empty() {
            write!(f, "{path}: ")?;
        }
        f.write_str(message)
    }
}

struct InvalidDisplay<'a> {
    origin: &'a str,
    errors: &'a [FieldError],
}

impl fmt::Display for InvalidDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Each problem carries its own file:line; the first one's leads the
        // message, as for decode errors.
        let place = |f: &mut fmt::Formatter<'_>, e: &FieldError| -> fmt::Result {
            if self.origin.is_empty() {
                return Ok(());
            }
            f.write_str(self.origin)?;
            if let Some(line) = e.line {
                write!(f, ":{line}")?;
            }
            f.write_str(": ")
        };
        match self.errors.first() {
            Some(first) => place(f, first)?,
            None if !self.origin.is_empty() => write!(f, "{}: ", self.origin)?,
            None => {}
        }
        f.write_str("invalid configuration: ")?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
                place(f, e)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// How a field failed validation (mirrors the apimachinery field error kinds
/// kube-proxy reports, so messages read the same as upstream's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// `Invalid value: <value>: <detail>`
    Invalid,
    /// `Unsupported value: <value>: supported values: <detail>`
    NotSupported,
}

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    /// Dotted camelCase path, e.g. `iptables.masqueradeBit` or
    /// `nodePortAddresses[1]`.
    pub field: String,
    /// The offending value as printed (strings quoted, numbers and durations
    /// bare).
    pub value: String,
    pub detail: String,
    /// 1-based line of the field (or its nearest enclosing key) in the
    /// config file; `None` when it is not in the file.
    pub line: Option<usize>,
}

impl FieldError {
    pub(crate) fn invalid(
        field: &str,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            kind: FieldErrorKind::Invalid,
            field: field.to_string(),
            value: value.into(),
            detail: detail.into(),
            line: None,
        }
    }

    pub(crate) fn not_supported(field: &str, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        FieldError {
            kind: FieldErrorKind::NotSupported,
            field: field.to_string(),
            value: format!("{value:?}"),
            detail: list.join(", "),
            line: None,
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FieldErrorKind::Invalid => write!(
                f,
                "{}: Invalid value: {}: {}",
                self.field, self.value, self.detail
            ),
            FieldErrorKind::NotSupported => write!(
                f,
                "{}: Unsupported value: {}: supported values: {}",
                self.field, self.value, self.detail
            ),
        }
    }
}
