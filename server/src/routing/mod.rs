// Temporary placeholder so the crate compiles; the real module replaces this file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub position: usize,
    pub message: String,
}
impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at position {}: {}", self.position, self.message)
    }
}
impl std::error::Error for PatternError {}
pub fn validate_name(_name: &str) -> Result<(), PatternError> {
    Ok(())
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);
impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, PatternError> {
        Ok(Pattern(s.into()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn matches(&self, name: &str) -> bool {
        self.0 == name
    }
}
pub struct RouteSpec {
    pub patterns: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
    pub tenant_id: Option<String>,
}
pub struct RouteTable {
    specs: Vec<(Vec<Pattern>, Vec<Pattern>, Option<String>)>,
}
impl RouteTable {
    pub fn build(specs: &[RouteSpec]) -> RouteTable {
        RouteTable {
            specs: specs
                .iter()
                .map(|s| (s.patterns.clone(), s.exclude.clone(), s.tenant_id.clone()))
                .collect(),
        }
    }
    pub fn route(&self, name: &str, tenant: Option<&str>, out: &mut Vec<u32>) {
        out.clear();
        for (i, (p, e, t)) in self.specs.iter().enumerate() {
            let prefix = |x: &Pattern| {
                x.0 == name || (x.0.ends_with(".*") && name.starts_with(&x.0[..x.0.len() - 1]))
            };
            if p.iter().any(prefix)
                && !e.iter().any(prefix)
                && t.as_deref().is_none_or(|t| Some(t) == tenant)
            {
                out.push(i as u32)
            }
        }
    }
}
