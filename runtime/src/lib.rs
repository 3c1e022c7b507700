//! kiln-runtime: placeholder, being written.
#![no_std]
