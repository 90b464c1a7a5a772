//! Routing: which subscriptions take an event. Patterns are parsed once and
//! compiled into two tries (include and exclude), so the cost of routing one
//! event does not grow with the number of subscriptions; the tenant check
//! runs only on the candidates that matched.
//!
//! This module knows nothing of storage or subscriptions as records: it maps
//! a name and tenant to indices into the specs it was built from.

mod index;
mod pattern;

use std::cell::RefCell;

pub use index::PatternIndex;
pub use pattern::{validate_name, Pattern, PatternError, Segment};

/// What one route (a subscription) listens to.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub patterns: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
    /// `None`: events of every tenant.
    pub tenant_id: Option<String>,
}

/// The compiled routes; immutable once built.
#[derive(Debug)]
pub struct RouteTable {
    include: PatternIndex<u32>,
    exclude: PatternIndex<u32>,
    has_excludes: bool,
    tenants: Vec<Option<Box<str>>>,
}

thread_local! {
    static EXCLUDED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

impl RouteTable {
    pub fn build(specs: &[RouteSpec]) -> RouteTable {
        let mut include = PatternIndex::new();
        let mut exclude = PatternIndex::new();
        let mut has_excludes = false;
        for (i, spec) in specs.iter().enumerate() {
            for p in &spec.patterns {
                include.insert(p, i as u32);
            }
            for p in &spec.exclude {
                exclude.insert(p, i as u32);
                has_excludes = true;
            }
        }
        RouteTable {
            include,
            exclude,
            has_excludes,
            tenants: specs
                .iter()
                .map(|s| s.tenant_id.as_deref().map(Box::from))
                .collect(),
        }
    }

    /// Fills `out` with the indices of every route that takes `name` from
    /// `tenant`: a pattern matches, no exclude pattern does, and the route's
    /// tenant (if any) is `tenant`. Sorted, without duplicates.
    pub fn route(&self, name: &str, tenant: Option<&str>, out: &mut Vec<u32>) {
        out.clear();
        self.include.find(name, out);
        if out.is_empty() {
            return;
        }
        out.sort_unstable();
        out.dedup();
        out.retain(|&i| match &self.tenants[i as usize] {
            None => true,
            Some(t) => Some(&**t) == tenant,
        });
        if self.has_excludes && !out.is_empty() {
            EXCLUDED.with_borrow_mut(|excluded| {
                excluded.clear();
                self.exclude.find(name, excluded);
                if !excluded.is_empty() {
                    out.retain(|i| !excluded.contains(i));
                }
            });
        }
    }

    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// An independent reference: recursion on segment slices.
    fn naive(pattern: &[&str], name: &[&str]) -> bool {
        match (pattern.first(), name.first()) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(&"**"), _) => {
                naive(&pattern[1..], name) || (!name.is_empty() && naive(pattern, &name[1..]))
            }
            (Some(_), None) => false,
            (Some(&"*"), Some(_)) => naive(&pattern[1..], &name[1..]),
            (Some(p), Some(n)) => p == n && naive(&pattern[1..], &name[1..]),
        }
    }

    fn naive_str(pattern: &str, name: &str) -> bool {
        let p: Vec<&str> = pattern.split('.').collect();
        let n: Vec<&str> = name.split('.').collect();
        naive(&p, &n)
    }

    fn pattern_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "*", "**"]), 1..=5)
            .prop_map(|s| s.join("."))
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=6)
            .prop_map(|s| s.join("."))
    }

    fn spec_strategy() -> impl Strategy<Value = (Vec<String>, Vec<String>, Option<String>)> {
        (
            prop::collection::vec(pattern_strategy(), 1..=3),
            prop::collection::vec(pattern_strategy(), 0..=2),
            prop::option::of(prop::sample::select(vec![
                "t1".to_string(),
                "t2".to_string(),
            ])),
        )
    }

    proptest! {
        #[test]
        fn pattern_matches_like_the_reference(pattern in pattern_strategy(), name in name_strategy()) {
            let parsed = Pattern::parse(&pattern).unwrap();
            prop_assert_eq!(parsed.matches(&name), naive_str(&pattern, &name));
        }

        #[test]
        fn table_routes_like_the_reference(
            specs in prop::collection::vec(spec_strategy(), 1..=12),
            names in prop::collection::vec(name_strategy(), 1..=8),
            tenant in prop::option::of(prop::sample::select(vec!["t1".to_string(), "t2".to_string()])),
        ) {
            let compiled: Vec<RouteSpec> = specs
                .iter()
                .map(|(p, e, t)| RouteSpec {
                    patterns: p.iter().map(|s| Pattern::parse(s).unwrap()).collect(),
                    exclude: e.iter().map(|s| Pattern::parse(s).unwrap()).collect(),
                    tenant_id: t.clone(),
                })
                .collect();
            let table = RouteTable::build(&compiled);
            let mut out = Vec::new();
            for name in &names {
                table.route(name, tenant.as_deref(), &mut out);
                let expected: Vec<u32> = specs
                    .iter()
                    .enumerate()
                    .filter(|(_, (p, e, t))| {
                        p.iter().any(|p| naive_str(p, name))
                            && !e.iter().any(|e| naive_str(e, name))
                            && (t.is_none() || t.as_deref() == tenant.as_deref())
                    })
                    .map(|(i, _)| i as u32)
                    .collect();
                prop_assert_eq!(&out, &expected, "name {}", name);
            }
        }
    }

    #[test]
    fn excludes_and_tenants_filter() {
        let spec = |p: &str, e: &[&str], t: Option<&str>| RouteSpec {
            patterns: vec![Pattern::parse(p).unwrap()],
            exclude: e.iter().map(|s| Pattern::parse(s).unwrap()).collect(),
            tenant_id: t.map(String::from),
        };
        let table = RouteTable::build(&[
            spec("lead.*", &["lead.test"], None),
            spec("lead.**", &[], Some("acme")),
        ]);
        let mut out = Vec::new();
        table.route("lead.test", Some("acme"), &mut out);
        assert_eq!(out, vec![1]);
        table.route("lead.created", None, &mut out);
        assert_eq!(out, vec![0]);
        table.route("order.created", Some("acme"), &mut out);
        assert!(out.is_empty());
    }
}
