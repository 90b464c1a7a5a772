//! The event name and pattern grammars. A name is 1–255 bytes of segments of
//! `[A-Za-z0-9_-]+` joined by `.`; a pattern is the same with two wildcard
//! segments: `*` (exactly one segment) and `**` (zero or more). Errors point
//! at the byte where the input stops making sense, so a form or the CLI can
//! underline it.

use std::{fmt, str::FromStr};

pub const MAX_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// 0-based byte offset of the problem.
    pub position: usize,
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: {}", self.position, self.message)
    }
}

impl std::error::Error for PatternError {}

fn error(position: usize, message: impl Into<String>) -> PatternError {
    PatternError {
        position,
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(Box<str>),
    /// `*`: exactly one segment.
    Star,
    /// `**`: zero or more segments.
    DoubleStar,
}

/// A parsed pattern. Consecutive `**` segments are folded into one: they
/// match the same names, and folding keeps matching linear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    segments: Vec<Segment>,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Splits `s` on `.` with each segment's byte offset, refusing empty input,
/// overlong input and empty segments.
fn split<'a>(s: &'a str, what: &str) -> Result<Vec<(usize, &'a str)>, PatternError> {
    if s.is_empty() {
        return Err(error(0, format!("{what} is empty")));
    }
    if s.len() > MAX_LEN {
        return Err(error(
            MAX_LEN,
            format!("{what} is longer than {MAX_LEN} bytes"),
        ));
    }
    let mut out = Vec::new();
    let mut start = 0;
    for part in s.split('.') {
        if part.is_empty() {
            let message = if start == 0 {
                format!("{what} cannot start with `.`")
            } else if start == s.len() {
                format!("{what} cannot end with `.`")
            } else {
                "empty segment (two dots in a row)".to_string()
            };
            return Err(error(start.min(s.len()), message));
        }
        out.push((start, part));
        start += part.len() + 1;
    }
    Ok(out)
}

fn check_literal(offset: usize, segment: &str) -> Result<(), PatternError> {
    match segment
        .char_indices()
        .find(|(_, c)| !(c.is_ascii() && is_name_byte(*c as u8)))
    {
        None => Ok(()),
        Some((i, '*')) => Err(error(
            offset + i,
            "`*` must be a whole segment (`*` or `**`)",
        )),
        Some((i, c)) => Err(error(
            offset + i,
            format!("invalid character {c:?}; segments use A-Z, a-z, 0-9, `_` and `-`"),
        )),
    }
}

/// Checks an event name against the name grammar. Runs on every event, so
/// it walks the bytes once and allocates nothing unless the name is bad.
pub fn validate_name(name: &str) -> Result<(), PatternError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_LEN {
        return split(name, "name").map(|_| ());
    }
    let mut segment_start = true;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'.' {
            if segment_start {
                return split(name, "name").map(|_| ());
            }
            segment_start = true;
        } else if is_name_byte(b) {
            segment_start = false;
        } else {
            // Let the slow path name the character (and its exact offset).
            for (offset, segment) in split(name, "name")? {
                check_literal(offset, segment)?;
            }
            return Err(error(i, "invalid character"));
        }
    }
    if segment_start {
        return split(name, "name").map(|_| ());
    }
    Ok(())
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, PatternError> {
        let mut segments: Vec<Segment> = Vec::new();
        for (offset, part) in split(s, "pattern")? {
            let segment = match part {
                "*" => Segment::Star,
                "**" => Segment::DoubleStar,
                literal => {
                    check_literal(offset, literal)?;
                    Segment::Literal(literal.into())
                }
            };
            if segment == Segment::DoubleStar && segments.last() == Some(&Segment::DoubleStar) {
                continue;
            }
            segments.push(segment);
        }
        Ok(Pattern {
            source: s.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Matches one name directly, without an index (for filters and tests).
    pub fn matches(&self, name: &str) -> bool {
        let parts: Vec<&str> = name.split('.').collect();
        let n = parts.len();
        // reachable[j]: the pattern prefix matched so far can end at part j.
        let mut reachable = vec![false; n + 1];
        reachable[0] = true;
        for segment in &self.segments {
            let mut next = vec![false; n + 1];
            for j in 0..=n {
                if !reachable[j] {
                    continue;
                }
                match segment {
                    Segment::DoubleStar => next[j..].iter_mut().for_each(|r| *r = true),
                    Segment::Star if j < n => next[j + 1] = true,
                    Segment::Literal(l) if j < n && **l == *parts[j] => next[j + 1] = true,
                    _ => {}
                }
            }
            reachable = next;
        }
        reachable[n]
    }
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Pattern, PatternError> {
        Pattern::parse(s)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> (usize, String) {
        match Pattern::parse(s) {
            Err(e) => (e.position, e.message),
            Ok(p) => panic!("{s} parsed as {p:?}"),
        }
    }

    #[test]
    fn valid_patterns_parse() {
        for s in ["lead.*", "billing.**", "**.failed", "**", "*", "a-b_c.D9"] {
            assert!(Pattern::parse(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn errors_point_at_the_problem() {
        assert_eq!(err("lead.*x").0, 5);
        assert!(err("lead.*x").1.contains("whole segment"));
        assert_eq!(err("lead..x").0, 5);
        assert!(err("lead..x").1.contains("empty segment"));
        assert_eq!(err("lead.!").0, 5);
        assert!(err("lead.!").1.contains("'!'"));
        assert_eq!(err("").0, 0);
        assert_eq!(err(".a").0, 0);
        assert_eq!(err("a.").0, 2);
        assert!(err("a.").1.contains("end"));
        assert_eq!(err(&"a".repeat(256)).0, 255);
        assert_eq!(err("a.b*").0, 3);
        assert_eq!(err("a.é").0, 2);
    }

    #[test]
    fn names_reject_wildcards() {
        assert!(validate_name("lead.created").is_ok());
        assert_eq!(validate_name("lead.*").map_err(|e| e.position), Err(5));
        assert_eq!(
            validate_name("lead created").map_err(|e| e.position),
            Err(4)
        );
        assert!(validate_name(&"a".repeat(255)).is_ok());
        assert!(validate_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn double_stars_fold() {
        let p = Pattern::parse("a.**.**.b").unwrap();
        assert_eq!(p.segments().len(), 3);
        assert_eq!(p.as_str(), "a.**.**.b");
    }

    #[test]
    fn direct_matching() {
        let m = |p: &str, n: &str| Pattern::parse(p).unwrap().matches(n);
        assert!(m("lead.*", "lead.created"));
        assert!(!m("lead.*", "lead"));
        assert!(!m("lead.*", "lead.a.b"));
        assert!(m("billing.**", "billing"));
        assert!(m("billing.**", "billing.invoice.paid"));
        assert!(m("**.failed", "failed"));
        assert!(m("**.failed", "a.b.failed"));
        assert!(!m("**.failed", "a.failed.b"));
        assert!(m("**", "x.y"));
    }
}
