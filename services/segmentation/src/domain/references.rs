//! The reference graph of rule segments: segment → the segments its rule references. Rules
//! may reference other segments, but never in a cycle and never in chains deeper than
//! [`MAX_REFERENCE_DEPTH`], so evaluation order exists and stays short.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// Orders segments so that every segment comes after the segments it references (among
/// `segments`); references outside the set are ignored. Ties keep id order.
pub fn dependency_order(segments: &[(Uuid, Vec<Uuid>)]) -> Vec<Uuid> {
    let known: BTreeSet<Uuid> = segments.iter().map(|(id, _)| *id).collect();
    let mut pending: BTreeMap<Uuid, BTreeSet<Uuid>> = segments
        .iter()
        .map(|(id, refs)| {
            let deps = refs
                .iter()
                .filter(|r| known.contains(r) && *r != id)
                .copied()
                .collect();
            (*id, deps)
        })
        .collect();
    let mut order = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let ready: Vec<Uuid> = pending
            .iter()
            .filter(|(_, deps)| deps.is_empty())
            .map(|(id, _)| *id)
            .collect();
        // A cycle cannot be created through the API; if one were stored, break it by id order.
        let ready = if ready.is_empty() {
            pending.keys().next().copied().into_iter().collect()
        } else {
            ready
        };
        for id in ready {
            pending.remove(&id);
            for deps in pending.values_mut() {
                deps.remove(&id);
            }
            order.push(id);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referenced_segments_come_first() {
        let a = Uuid::from_u128(3);
        let b = Uuid::from_u128(2);
        let c = Uuid::from_u128(1);
        // c references b, b references a, a references a static segment outside the set.
        let order = dependency_order(&[(c, vec![b]), (b, vec![a]), (a, vec![Uuid::from_u128(99)])]);
        assert_eq!(order, vec![a, b, c]);
    }
}
