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
//!
//! The free stack is painted before the first inference and scanned after it: the
//! firmware prints how many bytes of stack `run` took (`stack run-bytes`), so the RAM a
//! model needs is its arena plus that. Printing is hand-written ([`Out`]), without
//! `core::fmt`, so the harness adds little flash besides the samples.

#![no_std]
#![no_main]

use core::num::NonZeroUsize;
use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::hio;

/// Console output over semihosting: strings and decimal integers, written by hand so
/// that no `core::fmt` code is linked (a few KB of flash).
struct Out(hio::HostStream);

impl Out {
    /// Writes `bytes`: the one call site of the semihosting write (not inlined, so each
    /// print costs a call, not a copy of the write loop).
    #[inline(never)]
    fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        let _ = self.0.write_all(bytes);
        self
    }

    /// Writes `text`.
    #[inline(always)]
    fn s(&mut self, text: &str) -> &mut Self {
        self.bytes(text.as_bytes())
    }

    /// Writes `n` in decimal (32-bit: 64-bit division would link a runtime routine).
    #[inline(never)]
    fn u(&mut self, n: usize) -> &mut Self {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        let mut n = n;
        // An opaque divisor: the hardware divide in a short loop, not ten unrolled
        // multiply-by-reciprocal steps (the firmware is built at opt-level 3); nonzero
        // and checked indexing, so no panic path (which would link `core::fmt`).
        let ten = NonZeroUsize::new(core::hint::black_box(10)).unwrap_or(NonZeroUsize::MIN);
        while let Some(j) = i.checked_sub(1) {
            let Some(d) = digits.get_mut(j) else { break };
            *d = b'0' + (n % ten) as u8;
            i = j;
            n /= ten;
            if n == 0 {
                break;
            }
        }
        self.bytes(digits.get(i..).unwrap_or(&[]))
    }

    /// Writes `n` in decimal, with a minus sign when negative.
    fn i(&mut self, n: i32) -> &mut Self {
        if n < 0 {
            self.s("-");
        }
        self.u(n.unsigned_abs() as usize)
    }

    /// Writes `n` as `0x` and eight hex digits.
    fn hex(&mut self, n: u32) -> &mut Self {
        let mut digits = *b"0x00000000";
        for (k, d) in digits[2..].iter_mut().enumerate() {
            let nibble = (n >> (28 - 4 * k)) & 0xF;
            *d = b"0123456789abcdef"[nibble as usize];
        }
        self.bytes(&digits)
    }
}

/// The stack high-water mark: the free stack is painted with [`PAINT`] and, after an
/// inference, scanned for the lowest word no longer holding it.
mod stack {
    extern "C" {
        /// End of `.bss`/`.uninit`: the lowest address the stack may grow to (cortex-m-rt).
        static mut _stack_end: u32;
    }

    /// The paint word.
    const PAINT: u32 = 0x5AC3_A55A;
    /// Bytes below the painting function's stack pointer left unpainted (its own
    /// registers may spill there while it runs).
    const MARGIN: usize = 64;

    /// The current stack pointer.
    #[inline(always)]
    pub fn sp() -> usize {
        cortex_m::register::msp::read() as usize
    }

    /// Paints the words from the stack's lowest address up to `MARGIN` bytes below the
    /// current stack pointer.
    #[inline(never)]
    pub fn paint() {
        let low = core::ptr::addr_of_mut!(_stack_end) as usize;
        let high = sp().saturating_sub(MARGIN) & !3;
        let mut a = low;
        while a < high {
            // SAFETY: [low, high) is free stack below every live frame (nothing runs
            // concurrently: no interrupts are enabled), word-aligned.
            unsafe { (a as *mut u32).write_volatile(PAINT) };
            a += 4;
        }
    }

    /// The lowest stack address written since [`paint`] (the first word from the
    /// bottom that lost its paint).
    pub fn lowest_used() -> usize {
        let low = core::ptr::addr_of_mut!(_stack_end) as usize;
        let mut a = low;
        // SAFETY: reads words of the stack region between its bottom and the live
        // frames, all initialized by `paint` or by code that ran since.
        while a < sp() && unsafe { (a as *const u32).read_volatile() } == PAINT {
            a += 4;
        }
        a
    }
}

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
    let Ok(out) = hio::hstdout() else { exit(5) };
    let mut out = Out(out);
    out.s("kiln-qemu: machine ")
        .s(data::MACHINE)
        .s(" samples ")
        .u(data::SAMPLES)
        .s(" input ")
        .u(model::INPUT_LEN)
        .s(" output ")
        .u(model::OUTPUT_LEN)
        .s(" arena ")
        .u(model::ARENA_BYTES)
        .s(if cfg!(feature = "empty") {
            " (empty: model not called)\n"
        } else {
            "\n"
        });
    #[cfg(kiln_fault)]
    cortex_m::asm::udf();
    // Kept in flash, as in the full firmware.
    #[cfg(feature = "empty")]
    core::hint::black_box(EXPECT);
    timer::start();
    let a = timer::now();
    let b = timer::now();
    out.s("timer-hz ")
        .u(timer::HZ as usize)
        .s(" timer-overhead ")
        .u((a.wrapping_sub(b) & timer::MASK) as usize)
        .s("\n");
    out.s("model weight-bytes ")
        .u(model::WEIGHT_BYTES)
        .s(" macs ")
        .u(usize::try_from(model::MACS).unwrap_or(usize::MAX))
        .s(" scratch-bytes ")
        .u(model::SCRATCH_BYTES)
        .s(" table-bytes ")
        .u(model::PARAMETER_TABLE_BYTES)
        .s("\n");
    #[cfg(kiln_profile)]
    {
        let ticks = profile::calibrate();
        out.s("profile-calibration calls ")
            .u(profile::CALIBRATION_CALLS)
            .s(" ticks ")
            .u(ticks as usize)
            .s("\n");
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
        let sp = stack::sp();
        if s == 0 {
            stack::paint();
        }
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
        if s == 0 {
            // Stack below `main`'s frame the inference (the call of `infer`) took.
            let used = sp.saturating_sub(stack::lowest_used());
            out.s("stack run-bytes ").u(used).s("\n");
        }
        out.s("sample ")
            .u(s)
            .s(" ticks ")
            .u(ticks as usize)
            .s(" output");
        for v in y {
            out.s(" ").i(v.into());
        }
        out.s("\n");
        #[cfg(kiln_profile)]
        if s == 0 {
            let calls = profile::calls();
            let kept = calls.min(profile::CAPACITY);
            out.s("profile start ")
                .u(t0 as usize)
                .s(" end ")
                .u(t1 as usize)
                .s(" layers ")
                .u(kept)
                .s(" dropped ")
                .u(calls - kept)
                .s("\n");
            for i in 0..kept {
                if let Some((node, stamp)) = profile::stamp(i) {
                    out.s("layer ")
                        .u(node as usize)
                        .s(" stamp ")
                        .u(stamp as usize)
                        .s("\n");
                }
            }
        }
        if data::EXPECT_SAMPLE != 0 {
            let want = EXPECT.get(s * model::OUTPUT_LEN..(s + 1) * model::OUTPUT_LEN);
            let same = want.is_some_and(|w| w.iter().zip(&y).all(|(&w, &g)| w as i8 == g));
            // The empty firmware compares too (result ignored), so that the comparison
            // counts as harness, not as model, when `kiln bench` subtracts the two.
            let same = core::hint::black_box(same);
            if COMPARE && !same {
                failures += 1;
                out.s("sample ").u(s).s(" MISMATCH\n");
            }
        }
    }
    out.s("done samples ")
        .u(data::SAMPLES)
        .s(" compared ")
        .s(if COMPARE { "true" } else { "false" })
        .s(" failures ")
        .u(failures)
        .s("\n");
    exit(if failures == 0 { 0 } else { 2 })
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    if let Ok(out) = hio::hstdout() {
        Out(out).s("HardFault at pc ").hex(frame.pc()).s("\n");
    }
    exit(3)
}

#[panic_handler]
fn on_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if let Ok(out) = hio::hstdout() {
        // The location only: formatting the message would link `core::fmt`.
        let mut out = Out(out);
        out.s("panic");
        if let Some(l) = info.location() {
            out.s(" at ").s(l.file()).s(":").u(l.line() as usize);
        }
        out.s("\n");
    }
    exit(4)
}
