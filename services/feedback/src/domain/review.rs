//! Reviews: a 1–5 rating with optional title and text about a product or a service.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What a review is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    /// A product.
    Product,
    /// A service.
    Service,
}

impl SubjectKind {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Product => "product",
            SubjectKind::Service => "service",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "product" => Some(SubjectKind::Product),
            "service" => Some(SubjectKind::Service),
            _ => None,
        }
    }
}

/// A reviewed subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Kind.
    pub kind: SubjectKind,
    /// The caller's id of it.
    pub id: String,
}

/// A new review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReview {
    /// Reviewer.
    pub customer_id: String,
    /// Subject.
    pub subject: Subject,
    /// 1–5.
    pub rating: i32,
    /// Title.
    pub title: String,
    /// Text.
    pub text: String,
    /// Channel slug, may be empty.
    pub channel: String,
}

/// A stored review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    /// Id.
    pub id: Uuid,
    /// Content.
    pub new: NewReview,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// When the reviewer's personal data was erased (profiles erasure).
    pub erase_time: Option<DateTime<Utc>>,
}

/// Count, average and distribution of one subject's ratings.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewSummary {
    /// Subject.
    pub subject: Subject,
    /// Number of reviews.
    pub count: i64,
    /// Average rating; None without reviews.
    pub average: Option<f64>,
    /// Count per rating 1–5.
    pub distribution: [i64; 5],
}
