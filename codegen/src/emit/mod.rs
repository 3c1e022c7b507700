//! Emitters: a planned graph in, source code out.

pub mod cuda;
pub mod rust;
