//! The one shape every refusal of bad input takes, whatever the door: which
//! field, and what is wrong with it.

/// One problem with one field. `path` is the field's location as segments
/// (`["attributes", "region"]`), rendered as a JSON pointer for HTTP and a
/// dotted name for gRPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: Vec<String>,
    pub message: String,
}

impl FieldError {
    pub fn new(path: &[&str], message: impl Into<String>) -> FieldError {
        FieldError {
            path: path.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
        }
    }

    /// RFC 6901: `/attributes/region`, with `~` and `/` escaped.
    pub fn pointer(&self) -> String {
        self.path
            .iter()
            .map(|seg| format!("/{}", seg.replace('~', "~0").replace('/', "~1")))
            .collect()
    }

    /// `event.attributes.region`.
    pub fn dotted(&self, prefix: &str) -> String {
        std::iter::once(prefix)
            .chain(self.path.iter().map(String::as_str))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(".")
    }
}
