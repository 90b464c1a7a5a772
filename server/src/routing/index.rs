//! A trie of patterns keyed by segment, so finding every pattern that matches
//! a name costs time proportional to the name's segments and the matches, not
//! to the number of patterns stored.
//!
//! Each node has literal children (by segment), a `*` child and a `**` child.
//! Matching walks the trie with a stack of (node, position) states; a `**`
//! node may also stay on itself while consuming a segment. Every (node,
//! position) state is visited at most once — `**` nodes are deduplicated
//! explicitly, and every other node has a single parent state per position —
//! so even pathological patterns cost at most nodes × segments.

use std::{cell::RefCell, collections::HashMap};

use super::pattern::{Pattern, Segment, MAX_LEN};

/// At most this many segments fit in a 255-byte name.
const MAX_SEGMENTS: usize = MAX_LEN / 2 + 1;

#[derive(Debug, Default)]
struct Node<T> {
    literals: HashMap<Box<str>, u32>,
    star: Option<u32>,
    double_star: Option<u32>,
    /// Whether this node is reached by a `**` edge (and may loop on itself).
    is_double_star: bool,
    values: Vec<T>,
}

#[derive(Debug)]
pub struct PatternIndex<T> {
    nodes: Vec<Node<T>>,
}

impl<T: Copy> Default for PatternIndex<T> {
    fn default() -> Self {
        PatternIndex::new()
    }
}

/// A walk state: a trie node and how many name segments are consumed.
type State = (u32, usize);

thread_local! {
    /// Walk state reused across lookups: the stack, and the `**` states
    /// already visited.
    static WALK: RefCell<(Vec<State>, Vec<State>)> =
        const { RefCell::new((Vec::new(), Vec::new())) };
}

impl<T: Copy> PatternIndex<T> {
    pub fn new() -> Self {
        PatternIndex {
            nodes: vec![Node {
                literals: HashMap::new(),
                star: None,
                double_star: None,
                is_double_star: false,
                values: Vec::new(),
            }],
        }
    }

    pub fn insert(&mut self, pattern: &Pattern, value: T) {
        let mut node = 0u32;
        for segment in pattern.segments() {
            node = self.child(node, segment);
        }
        self.nodes[node as usize].values.push(value);
    }

    fn child(&mut self, parent: u32, segment: &Segment) -> u32 {
        let next = self.nodes.len() as u32;
        let node = &mut self.nodes[parent as usize];
        let (slot, is_double_star) = match segment {
            Segment::Literal(l) => {
                if let Some(&existing) = node.literals.get(l) {
                    return existing;
                }
                node.literals.insert(l.clone(), next);
                return self.push(false);
            }
            Segment::Star => (&mut node.star, false),
            Segment::DoubleStar => (&mut node.double_star, true),
        };
        match *slot {
            Some(existing) => existing,
            None => {
                *slot = Some(next);
                self.push(is_double_star)
            }
        }
    }

    fn push(&mut self, is_double_star: bool) -> u32 {
        self.nodes.push(Node {
            literals: HashMap::new(),
            star: None,
            double_star: None,
            is_double_star,
            values: Vec::new(),
        });
        (self.nodes.len() - 1) as u32
    }

    /// Appends the value of every pattern matching `name`. A value inserted
    /// under several matching patterns appears once per pattern: callers
    /// sort and dedup when that matters.
    pub fn find(&self, name: &str, out: &mut Vec<T>) {
        let mut parts: [&str; MAX_SEGMENTS] = [""; MAX_SEGMENTS];
        let mut n = 0;
        for part in name.split('.') {
            if n == MAX_SEGMENTS {
                return; // Not a valid name; nothing can match it.
            }
            parts[n] = part;
            n += 1;
        }
        let parts = &parts[..n];
        WALK.with_borrow_mut(|(stack, seen)| {
            stack.clear();
            seen.clear();
            stack.push((0, 0));
            while let Some((id, pos)) = stack.pop() {
                let node = &self.nodes[id as usize];
                if node.is_double_star {
                    if seen.contains(&(id, pos)) {
                        continue;
                    }
                    seen.push((id, pos));
                }
                self.step(node, id, pos, parts, stack, out);
            }
        });
    }

    fn step(
        &self,
        node: &Node<T>,
        id: u32,
        pos: usize,
        parts: &[&str],
        stack: &mut Vec<(u32, usize)>,
        out: &mut Vec<T>,
    ) {
        // `**` may match nothing, so its child is reachable at this position.
        if let Some(ds) = node.double_star {
            stack.push((ds, pos));
        }
        let Some(part) = parts.get(pos) else {
            out.extend_from_slice(&node.values);
            return;
        };
        if let Some(&child) = node.literals.get(*part) {
            stack.push((child, pos + 1));
        }
        if let Some(star) = node.star {
            stack.push((star, pos + 1));
        }
        if node.is_double_star {
            stack.push((id, pos + 1));
        }
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(patterns: &[&str]) -> PatternIndex<usize> {
        let mut index = PatternIndex::new();
        for (i, p) in patterns.iter().enumerate() {
            index.insert(&Pattern::parse(p).unwrap(), i);
        }
        index
    }

    fn find(index: &PatternIndex<usize>, name: &str) -> Vec<usize> {
        let mut out = Vec::new();
        index.find(name, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    #[test]
    fn finds_each_kind_of_match() {
        let idx = index(&["lead.*", "billing.**", "**.failed", "lead.created", "**"]);
        assert_eq!(find(&idx, "lead.created"), vec![0, 3, 4]);
        assert_eq!(find(&idx, "billing"), vec![1, 4]);
        assert_eq!(find(&idx, "billing.invoice.failed"), vec![1, 2, 4]);
        assert_eq!(find(&idx, "x.failed"), vec![2, 4]);
        assert_eq!(find(&idx, "lead"), vec![4]);
    }

    #[test]
    fn pathological_double_stars_stay_fast() {
        let pattern = std::iter::repeat_n("**.a", 20)
            .collect::<Vec<_>>()
            .join(".");
        let idx = index(&[&pattern]);
        let name = std::iter::repeat_n("a", 100).collect::<Vec<_>>().join(".");
        let started = std::time::Instant::now();
        assert_eq!(find(&idx, &name), vec![0]);
        let other = format!("{name}.b");
        assert!(find(&idx, &other).is_empty());
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
