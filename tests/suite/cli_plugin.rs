//! `wulf plugin ...` through the real binary.
