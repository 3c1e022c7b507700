//! Firmware for QEMU's Cortex-M machines: runs the model that `build.rs` compiled on
//! every input sample, compares each output with the expected one, prints results and
//! timer ticks through semihosting, and exits through semihosting with a status code:
//! 0 all samples match (or nothing to compare), 2 a mismatch, 3 a HardFault, 4 a panic.
//!
//! On the mps2 machines the CMSDK TIMER0 (25 MHz) is read around each `run` call; under
//! `qemu -icount shift=0` one tick is exactly 40 executed instructions. The microbit
//! uses SysTick (16 MHz, 24 bits: one tick is 62.5 instructions, up to about 10^9).
//!
//! With feature `profile` (cfg `kiln_profile`, for `kiln bench`) the generated `run` calls
//! [`profile::kiln_profile_layer`] after each layer; it records the node and the timer,
//! and the firmware prints the stamps of sample 0 after that inference, and first how
//! many ticks the hook itself takes (calibrated over [`profile::CALIBRATION_CALLS`] calls).

#![no_std]
#![no_main]

use core::fmt::Write as _;
use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::hio;

/// The compiled model (`KILN_MODEL`).
#[allow(dead_code, clippy::all)]
mod model {
    include!(concat!(env!("OUT_DIR"), "/model.rs"));
}

/// What `build.rs` wrote about the samples.
#[allow(dead_code)]
mod data {
    include!(concat!(env!("OUT_DIR"), "/data.rs"));
}

/// Input samples, `data::SAMPLES × model::INPUT_LEN` int8 values.
static INPUT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/input.bin"));
/// Expected outputs, `data::SAMPLES × model::OUTPUT_LEN` int8 values, or empty.
static EXPECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/expect.bin"));

const _: () = assert!(
    data::INPUT_SAMPLE == model::INPUT_LEN,
    "the input samples do not have the model's input size"
);
const _: () = assert!(
    data::EXPECT_SAMPLE == 0 || data::EXPECT_SAMPLE == model::OUTPUT_LEN,
    "the expected outputs do not have the model's output size"
);
const _: () = assert!(INPUT.len() == data::SAMPLES * model::INPUT_LEN);

/// Whether outputs are compared (the empty firmware keeps the expected outputs in flash,
/// so that its size differs from the full one by exactly the model, but computes nothing).
const COMPARE: bool = data::EXPECT_SAMPLE != 0 && !cfg!(feature = "empty");

#[cfg(not(feature = "empty"))]
static mut ARENA: model::Arena = model::Arena::new();

/// Semihosting operation SYS_EXIT_EXTENDED.
const SYS_EXIT_EXTENDED: usize = 0x20;
/// ADP_Stopped_ApplicationExit: the reason SYS_EXIT_EXTENDED reports with the code.
const APPLICATION_EXIT: usize = 0x2_0026;

/// Ends the emulation with `code` as QEMU's exit status.
fn exit(code: usize) -> ! {
    // SAFETY: a semihosting call with a two-word parameter block, as the spec defines.
    unsafe {
        cortex_m_semihosting::syscall(SYS_EXIT_EXTENDED, &[APPLICATION_EXIT, code]);
    }
    loop {
        cortex_m::asm::bkpt();
    }
}

/// CMSDK APB TIMER0 of the mps2 machines, counting down from `u32::MAX`.
#[cfg(kiln_timer)]
mod timer {
    const BASE: usize = 0x4000_0000;
    const CTRL: *mut u32 = BASE as *mut u32;
    const VALUE: *mut u32 = (BASE + 4) as *mut u32;
    const RELOAD: *mut u32 = (BASE + 8) as *mut u32;

    /// TIMER0's clock (the mps2 APB clock).
    pub const HZ: u32 = 25_000_000;
    /// Bits the counter has.
    pub const MASK: u32 = u32::MAX;

    /// Loads the counter and enables it.
    pub fn start() {
        // SAFETY: TIMER0's registers on the mps2 machines; nothing else uses the timer.
        unsafe {
            CTRL.write_volatile(0);
            RELOAD.write_volatile(u32::MAX);
            VALUE.write_volatile(u32::MAX);
            CTRL.write_volatile(1);
        }
    }

    /// The current count.
    #[inline(always)]
    pub fn now() -> u32 {
        // SAFETY: as above; a read has no side effect.
        unsafe { VALUE.read_volatile() }
    }
}

/// Machines without TIMER0 (the microbit): SysTick on the core clock, 24 bits, counting
/// down; the caller masks differences to 24 bits.
#[cfg(not(kiln_timer))]
mod timer {
    /// SysTick's clock on the microbit (nRF51 HCLK).
    pub const HZ: u32 = 16_000_000;
    /// Bits the counter has.
    pub const MASK: u32 = 0x00FF_FFFF;
    const CSR: *mut u32 = 0xE000_E010 as *mut u32;
    const RVR: *mut u32 = 0xE000_E014 as *mut u32;
    const CVR: *mut u32 = 0xE000_E018 as *mut u32;

    /// Loads the counter and enables it on the core clock, without interrupts.
    pub fn start() {
        // SAFETY: the architected SysTick registers; nothing else uses SysTick.
        unsafe {
            CSR.write_volatile(0);
            RVR.write_volatile(MASK);
            CVR.write_volatile(0);
            CSR.write_volatile(0b101);
        }
    }

    /// The current count.
    #[inline(always)]
    pub fn now() -> u32 {
        // SAFETY: as above; a read has no side effect.
        unsafe { CVR.read_volatile() }
    }
}

/// Per-layer stamps of profiling builds: the hook the generated `run` calls after each
/// layer, and the record it fills.
#[cfg(kiln_profile)]
mod profile {
    use super::timer;

    /// Stamps kept per inference (1.5 KiB, small enough for the microbit); further
    /// calls are only counted, and reported as dropped.
    pub const CAPACITY: usize = 256;
    /// Back-to-back hook calls timed to measure the hook's own cost.
    pub const CALIBRATION_CALLS: usize = 256;

    /// Node index and timer value of each hook call since [`reset`].
    struct Record {
        nodes: [u16; CAPACITY],
        stamps: [u32; CAPACITY],
        calls: usize,
    }

    static mut RECORD: Record = Record {
        nodes: [0; CAPACITY],
        stamps: [0; CAPACITY],
        calls: 0,
    };

    /// Called by the generated `run` after each layer (cfg `kiln_profile`): reads the
    /// timer first, then records it with the node index. Never inlined, so that its cost
    /// is the same at every call site and in [`calibrate`].
    #[no_mangle]
    #[inline(never)]
    pub fn kiln_profile_layer(node: usize) {
        let t = timer::now();
        // SAFETY: single-threaded, no interrupts use RECORD, and no reference to it is
        // alive across this call (readers copy out of it between inferences).
        let r = unsafe { &mut *core::ptr::addr_of_mut!(RECORD) };
        let n = r.calls;
        if n < CAPACITY {
            r.nodes[n] = node as u16;
            r.stamps[n] = t;
        }
        r.calls = n.wrapping_add(1);
    }

    /// Forgets the stamps recorded so far.
    pub fn reset() {
        // SAFETY: as in `kiln_profile_layer`.
        unsafe { (*core::ptr::addr_of_mut!(RECORD)).calls = 0 };
    }

    /// Calls: how many stamps were recorded (or dropped) since [`reset`].
    pub fn calls() -> usize {
        // SAFETY: as in `kiln_profile_layer`.
        unsafe { (*core::ptr::addr_of!(RECORD)).calls }
    }

    /// Stamp `i` (node index, timer value), if it was kept.
    pub fn stamp(i: usize) -> Option<(u16, u32)> {
        // SAFETY: as in `kiln_profile_layer`.
        let r = unsafe { &*core::ptr::addr_of!(RECORD) };
        Some((*r.nodes.get(i)?, *r.stamps.get(i)?)).filter(|_| i < r.calls)
    }

    /// Ticks taken by [`CALIBRATION_CALLS`] hook calls in a row (their loop included).
    pub fn calibrate() -> u32 {
        let a = timer::now();
        for i in 0..CALIBRATION_CALLS {
            kiln_profile_layer(core::hint::black_box(i));
        }
        let b = timer::now();
        reset();
        a.wrapping_sub(b) & timer::MASK
    }
}

/// One inference, never inlined and called with opaque arguments: `run` is compiled on
/// its own, the same in every variant of this firmware (with or without the profiling
/// code in `main`, with one sample or many).
#[cfg(not(feature = "empty"))]
#[inline(never)]
fn infer(arena: &mut model::Arena, x: &[i8; model::INPUT_LEN], y: &mut [i8; model::OUTPUT_LEN]) {
    model::run(arena, x, y);
}

#[entry]
fn main() -> ! {
    let Ok(mut out) = hio::hstdout() else { exit(5) };
    let _ = writeln!(
        out,
        "kiln-qemu: machine {} samples {} input {} output {} arena {}{}",
        data::MACHINE,
        data::SAMPLES,
        model::INPUT_LEN,
        model::OUTPUT_LEN,
        model::ARENA_BYTES,
        if cfg!(feature = "empty") {
            " (empty: model not called)"
        } else {
            ""
        }
    );
    #[cfg(kiln_fault)]
    cortex_m::asm::udf();
    // Kept in flash, as in the full firmware.
    #[cfg(feature = "empty")]
    core::hint::black_box(EXPECT);
    timer::start();
    let a = timer::now();
    let b = timer::now();
    let _ = writeln!(
        out,
        "timer-hz {} timer-overhead {}",
        timer::HZ,
        a.wrapping_sub(b) & timer::MASK
    );
    let _ = writeln!(
        out,
        "model weight-bytes {} macs {} scratch-bytes {}",
        model::WEIGHT_BYTES,
        model::MACS,
        model::SCRATCH_BYTES
    );
    #[cfg(kiln_profile)]
    {
        let ticks = profile::calibrate();
        let _ = writeln!(
            out,
            "profile-calibration calls {} ticks {ticks}",
            profile::CALIBRATION_CALLS
        );
    }
    #[cfg(not(feature = "empty"))]
    // SAFETY: the only reference to ARENA, taken once before the loop.
    let arena = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    let mut failures = 0usize;
    for s in 0..data::SAMPLES {
        let Some(chunk) = INPUT.get(s * model::INPUT_LEN..(s + 1) * model::INPUT_LEN) else {
            exit(5)
        };
        // SAFETY: `chunk` has exactly INPUT_LEN bytes, and i8 has u8's layout.
        let x = unsafe { &*(chunk.as_ptr() as *const [i8; model::INPUT_LEN]) };
        let mut y = [0i8; model::OUTPUT_LEN];
        #[cfg(kiln_profile)]
        profile::reset();
        let t0 = timer::now();
        #[cfg(not(feature = "empty"))]
        // Opaque arguments: `run` is not specialized for the samples' addresses, so a
        // build with one sample runs the same code as one with twenty.
        infer(
            core::hint::black_box(&mut *arena),
            core::hint::black_box(x),
            core::hint::black_box(&mut y),
        );
        #[cfg(feature = "empty")]
        core::hint::black_box((x, &mut y));
        let t1 = timer::now();
        let ticks = t0.wrapping_sub(t1) & timer::MASK;
        let _ = write!(out, "sample {s} ticks {ticks} output");
        for v in y {
            let _ = write!(out, " {v}");
        }
        let _ = writeln!(out);
        #[cfg(kiln_profile)]
        if s == 0 {
            let calls = profile::calls();
            let kept = calls.min(profile::CAPACITY);
            let _ = writeln!(
                out,
                "profile start {t0} end {t1} layers {kept} dropped {}",
                calls - kept
            );
            for i in 0..kept {
                if let Some((node, stamp)) = profile::stamp(i) {
                    let _ = writeln!(out, "layer {node} stamp {stamp}");
                }
            }
        }
        if COMPARE {
            let want = EXPECT.get(s * model::OUTPUT_LEN..(s + 1) * model::OUTPUT_LEN);
            let same = want.is_some_and(|w| w.iter().zip(&y).all(|(&w, &g)| w as i8 == g));
            if !same {
                failures += 1;
                let _ = writeln!(out, "sample {s} MISMATCH");
            }
        }
    }
    let _ = writeln!(
        out,
        "done samples {} compared {} failures {failures}",
        data::SAMPLES,
        COMPARE
    );
    exit(if failures == 0 { 0 } else { 2 })
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    if let Ok(mut out) = hio::hstdout() {
        let _ = writeln!(out, "HardFault at pc {:#010x}", frame.pc());
    }
    exit(3)
}

#[panic_handler]
fn on_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if let Ok(mut out) = hio::hstdout() {
        let _ = writeln!(out, "panic: {info}");
    }
    exit(4)
}
