//! What kiln's example firmwares share, so each board crate holds only its clock setup.
//!
//! - feature `build` (in a firmware's `build.rs`): [`build::generate`] compiles the
//!   model named by `KILN_MODEL` (default: the shipped keyword-spotting model) into
//!   `OUT_DIR/model.rs`, writes a sample input and the host's expected top class to
//!   `OUT_DIR/sample.rs`, and the board's `memory.x` from kiln's board table.
//! - feature `firmware` (no_std): [`run_forever`] runs the model, timing each
//!   inference with the DWT cycle counter, and logs the top class with defmt.
#![cfg_attr(not(feature = "build"), no_std)]

#[cfg(feature = "build")]
pub mod build;

/// The index of the largest score (the first one on ties); 0 for an empty slice.
pub fn top_class(scores: &[i8]) -> usize {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    best
}

/// Copies `sample` into `input`, as much as fits (the rest stays zero).
pub fn fill(input: &mut [i8], sample: &[i8]) {
    for (x, s) in input.iter_mut().zip(sample) {
        *x = *s;
    }
}

/// How many inferences [`run_forever`] runs before it sleeps.
#[cfg(feature = "firmware")]
pub const INFERENCES: u32 = 10;

/// Runs `infer` on `input` [`INFERENCES`] times, logging each one's top class, its
/// score and its cycle count (DWT CYCCNT) with defmt, then sleeps forever.
/// `expected` is the host executor's top class for the same input, when known.
#[cfg(feature = "firmware")]
pub fn run_forever<const I: usize, const O: usize>(
    mut core: cortex_m::Peripherals,
    model: &str,
    input: &[i8; I],
    expected: Option<usize>,
    mut infer: impl FnMut(&[i8; I], &mut [i8; O]),
) -> ! {
    use cortex_m::peripheral::DWT;
    core.DCB.enable_trace();
    DWT::unlock();
    core.DWT.enable_cycle_counter();
    defmt::println!(
        "kiln: model {=str}, input {=usize} bytes, output {=usize}",
        model,
        I,
        O
    );
    let mut output = [0i8; O];
    for n in 0..INFERENCES {
        let start = DWT::cycle_count();
        infer(input, &mut output);
        let cycles = DWT::cycle_count().wrapping_sub(start);
        let top = top_class(&output);
        let score = output.get(top).copied().unwrap_or(0);
        match expected {
            Some(e) => defmt::println!(
                "inference {=u32}: top class {=usize} (score {=i8}, host says {=usize}: {=str}), {=u32} cycles",
                n, top, score, e, if e == top { "ok" } else { "MISMATCH" }, cycles
            ),
            None => defmt::println!(
                "inference {=u32}: top class {=usize} (score {=i8}), {=u32} cycles",
                n, top, score, cycles
            ),
        }
    }
    defmt::println!("kiln: done");
    loop {
        cortex_m::asm::wfi();
    }
}
