//! ONNX bytes through import, passes, planning, emission and (small graphs) execution:
//! any panic, hang or runaway allocation is a bug.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kiln_codegen::fuzzing::import_onnx_and_run(data);
});
