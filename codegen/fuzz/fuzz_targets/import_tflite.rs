//! Fuzzes the TFLite importer and, for inputs that import, the host executor: no input
//! may panic, hang or allocate without bound.
//!
//! Run: `cd codegen/fuzz && cargo +nightly fuzz run import_tflite corpus seeds`, where
//! `seeds` holds the shipped models (see codegen/fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kiln_codegen::fuzzing::import_and_run(data);
});
