//! The field catalog: every field a rule may test, its value type and operators.
//! TODO(segmentation/rules): built-in fields plus attributes and loyalty tiers from the feeds.

/// The fields a rule may use.
#[derive(Debug, Clone, Default)]
pub struct Catalog {}
