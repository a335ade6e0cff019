//! RFM scoring. TODO(segmentation/facts).
