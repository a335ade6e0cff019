//! Duplicate detection: which rules say two customers may be one person, and how strongly.

use std::collections::HashSet;

use super::identity::canonical_email;
use super::{Customer, IdentityType};

/// A likely duplicate: the candidate, score and the rules that matched (rule number, the
/// asked customer's identity index, the candidate's identity index, field paths).
#[derive(Debug, Clone)]
pub struct Duplicate {
    /// The candidate (ACTIVE).
    pub customer: Customer,
    /// 0–1.
    pub score: f64,
    /// Evidence.
    pub matches: Vec<DuplicateEvidence>,
}

/// One matched rule.
#[derive(Debug, Clone)]
pub struct DuplicateEvidence {
    /// `DuplicateMatchRule` number.
    pub rule: i32,
    /// Index into the asked customer's identities.
    pub customer_identity: Option<usize>,
    /// Index into the candidate's identities.
    pub candidate_identity: Option<usize>,
    /// For trait rules.
    pub field_paths: Vec<String>,
}

/// The score of a candidate: that of its strongest rule (`DuplicateMatchRule` numbers: 1 same
/// canonical e-mail, 2 same national phone number, 3 same value under another type, 4 same name and birth
/// date, 5 same name and place).
pub fn score(evidence: &[DuplicateEvidence]) -> f64 {
    evidence
        .iter()
        .map(|e| match e.rule {
            1 => 0.9,
            2 => 0.85,
            3 => 0.8,
            4 => 0.6,
            _ => 0.5,
        })
        .fold(0.0_f64, f64::max)
}

/// The duplicate rules that match between `customer` and `candidate`, by rule number.
pub fn evidence(customer: &Customer, candidate: &Customer) -> Vec<DuplicateEvidence> {
    let mut evidence = Vec::new();
    for (i, mine) in customer.identities.iter().enumerate() {
        for (j, theirs) in candidate.identities.iter().enumerate() {
            let rule = if mine.kind == IdentityType::Email
                && theirs.kind == IdentityType::Email
                && canonical_email(&mine.value) == canonical_email(&theirs.value)
            {
                Some(1)
            } else if mine.value == theirs.value
                && (mine.kind != theirs.kind || mine.namespace != theirs.namespace)
            {
                Some(3)
            } else {
                None
            };
            if let Some(rule) = rule {
                evidence.push(DuplicateEvidence {
                    rule,
                    customer_identity: Some(i),
                    candidate_identity: Some(j),
                    field_paths: Vec::new(),
                });
            }
        }
    }
    let (a, b) = (&customer.traits, &candidate.traits);
    let same_name = !a.given_name.is_empty()
        && !a.family_name.is_empty()
        && a.given_name.to_lowercase() == b.given_name.to_lowercase()
        && a.family_name.to_lowercase() == b.family_name.to_lowercase();
    if same_name && a.birth_date.is_some() && a.birth_date == b.birth_date {
        evidence.push(DuplicateEvidence {
            rule: 4,
            customer_identity: None,
            candidate_identity: None,
            field_paths: vec![
                "family_name".into(),
                "given_name".into(),
                "demographics.birth_date".into(),
            ],
        });
    }
    let same_place = if !a.postal_code.is_empty() || !b.postal_code.is_empty() {
        a.postal_code == b.postal_code && !a.postal_code.is_empty()
    } else {
        !a.city.is_empty() && a.city.to_lowercase() == b.city.to_lowercase()
    };
    if same_name && same_place {
        evidence.push(DuplicateEvidence {
            rule: 5,
            customer_identity: None,
            candidate_identity: None,
            field_paths: vec![
                "family_name".into(),
                "given_name".into(),
                "geography".into(),
            ],
        });
    }
    let mut seen = HashSet::new();
    evidence.retain(|e| seen.insert((e.rule, e.customer_identity, e.candidate_identity)));
    evidence.sort_by_key(|e| e.rule);
    evidence
}
