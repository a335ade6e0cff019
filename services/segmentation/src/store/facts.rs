//! Reads and writes the facts projection. TODO(segmentation/facts).
