//! Loads the catalog: built-in fields plus what the feeds taught. TODO(segmentation/rules).
