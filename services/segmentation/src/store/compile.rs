//! Compiles a rule to one parameterised SQL condition. TODO(segmentation/rules).
