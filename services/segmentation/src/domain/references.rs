//! The reference graph of rule segments: segment → the segments its rule references. Rules
//! may reference other segments, but never in a cycle and never in chains deeper than
//! [`MAX_REFERENCE_DEPTH`], so evaluation order exists and stays short.

use std::collections::{BTreeSet, HashMap};

use uuid::Uuid;

/// Longest chain of segment references (A → B → C → D → E is 4).
pub const MAX_REFERENCE_DEPTH: usize = 4;
/// Most segment references in one rule.
pub const MAX_REFERENCES: usize = 20;

/// Segment → the segments its rule references.
pub type ReferenceGraph = HashMap<Uuid, Vec<Uuid>>;

/// Whether `from` reaches `to` through references.
pub fn reaches(graph: &ReferenceGraph, from: Uuid, to: Uuid) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(node) = stack.pop() {
        if node == to {
            return true;
        }
        if seen.insert(node)
            && let Some(next) = graph.get(&node)
        {
            stack.extend(next.iter().copied());
        }
    }
    false
}

/// Longest reference chain below `node` (0 when it references nothing).
pub fn depth(graph: &ReferenceGraph, node: Uuid, guard: usize) -> usize {
    if guard > 64 {
        return guard;
    }
    graph
        .get(&node)
        .map(|refs| {
            refs.iter()
                .map(|r| depth(graph, *r, guard + 1) + 1)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Longest chain of segments referencing `node` (0 when none does).
pub fn height(graph: &ReferenceGraph, node: Uuid, guard: usize) -> usize {
    if guard > 64 {
        return guard;
    }
    graph
        .iter()
        .filter(|(_, refs)| refs.contains(&node))
        .map(|(id, _)| height(graph, *id, guard + 1) + 1)
        .max()
        .unwrap_or(0)
}
