//! Lifecycle stages. TODO(segmentation/facts).
