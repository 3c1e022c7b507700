//! The Arm DSP-extension instructions the fast kernels are built from, each with a
//! portable twin that computes exactly the same bits.
//!
//! With `cfg(kiln_dsp)` (set by `runtime/build.rs` for Cortex-M4/M7/M33-class targets)
//! every function is one instruction through `core::arch::asm!`; elsewhere (the host,
//! Cortex-M0/M3, RISC-V) it is plain Rust. The kernels call only these, so the code the
//! host tests against the reference kernels is the code the target runs, minus the
//! instruction selection. The tests at the bottom pin each portable function to the
//! architecture manual's definition on edge values.
//!
//! Packed values are `u32` words: two 16-bit halves (`[lo, hi]`, low half in bits
//! 0..16) or four bytes (byte 0 in bits 0..8).
#![allow(unsafe_code)]

#[cfg(kiln_dsp)]
use core::arch::asm;

/// The low half of a packed word, sign-extended.
#[inline(always)]
pub const fn lo16(x: u32) -> i32 {
    x as u16 as i16 as i32
}

/// The high half of a packed word, sign-extended.
#[inline(always)]
pub const fn hi16(x: u32) -> i32 {
    (x >> 16) as u16 as i16 as i32
}

/// Packs two values into halves `[lo, hi]`, keeping the low 16 bits of each (PKHBT).
#[inline(always)]
pub const fn pack16(lo: i32, hi: i32) -> u32 {
    (lo as u32 & 0xFFFF) | ((hi as u32) << 16)
}

/// Four bytes as one little-endian word (one `LDR` where unaligned loads are allowed).
#[inline(always)]
pub const fn word(b: [i8; 4]) -> u32 {
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

/// The same value in both halves: the operand [`sxtab16`] adds to each.
#[inline(always)]
pub const fn splat16(v: i32) -> u32 {
    pack16(v, v)
}

/// The same byte in all four lanes.
#[inline(always)]
pub const fn splat8(v: i8) -> u32 {
    (v as u8 as u32).wrapping_mul(0x0101_0101)
}

/// SXTB16: bytes 0 and 2 of `x`, sign-extended into halves `[b0, b2]`.
#[inline(always)]
pub fn sxtb16(x: u32) -> u32 {
    #[cfg(kiln_dsp)]
    {
        let r: u32;
        // SAFETY: a register-only DSP instruction; the target has the DSP extension.
        unsafe {
            asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        r
    }
    #[cfg(not(kiln_dsp))]
    {
        pack16(x as u8 as i8 as i32, (x >> 16) as u8 as i8 as i32)
    }
}

/// SXTB16 with ROR #8: bytes 1 and 3 of `x`, sign-extended into halves `[b1, b3]`.
#[inline(always)]
pub fn sxtb16_ror8(x: u32) -> u32 {
    #[cfg(kiln_dsp)]
    {
        let r: u32;
        // SAFETY: as in `sxtb16`.
        unsafe {
            asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        r
    }
    #[cfg(not(kiln_dsp))]
    {
        sxtb16(x.rotate_right(8))
    }
}

/// SXTAB16: `[a.lo + b0, a.hi + b2]` with bytes 0 and 2 of `x` sign-extended; each half
/// wraps at 16 bits. Unpacks four int8 values and adds an offset to them in one go.
#[inline(always)]
pub fn sxtab16(a: u32, x: u32) -> u32 {
    #[cfg(kiln_dsp)]
    {
        let r: u32;
        // SAFETY: as in `sxtb16`.
        unsafe {
            asm!("sxtab16 {r}, {a}, {x}", r = lateout(reg) r, a = in(reg) a, x = in(reg) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        r
    }
    #[cfg(not(kiln_dsp))]
    {
        let b = sxtb16(x);
        pack16(lo16(a) + lo16(b), hi16(a) + hi16(b))
    }
}

/// SXTAB16 with ROR #8: `[a.lo + b1, a.hi + b3]`, each half wrapping at 16 bits.
#[inline(always)]
pub fn sxtab16_ror8(a: u32, x: u32) -> u32 {
    #[cfg(kiln_dsp)]
    {
        let r: u32;
        // SAFETY: as in `sxtb16`.
        unsafe {
            asm!("sxtab16 {r}, {a}, {x}, ror #8", r = lateout(reg) r, a = in(reg) a,
                 x = in(reg) x, options(pure, nomem, nostack, preserves_flags));
        }
        r
    }
    #[cfg(not(kiln_dsp))]
    {
        sxtab16(a, x.rotate_right(8))
    }
}

/// SMLAD: `acc + a.lo * b.lo + a.hi * b.hi`, wrapping at 32 bits (two MACs).
#[inline(always)]
pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    #[cfg(kiln_dsp)]
    {
        let mut acc = acc;
        // SAFETY: as in `sxtb16` (SMLAD may set the sticky Q flag, which nothing reads).
        // The sum is tied to its register, so a running sum stays put in loops.
        unsafe {
            asm!("smlad {acc}, {a}, {b}, {acc}", acc = inout(reg) acc, a = in(reg) a,
                 b = in(reg) b, options(pure, nomem, nostack));
        }
        acc
    }
    #[cfg(not(kiln_dsp))]
    {
        acc.wrapping_add(lo16(a) * lo16(b))
            .wrapping_add(hi16(a) * hi16(b))
    }
}

/// SMLABB: `acc + a.lo * b.lo`, wrapping at 32 bits.
#[inline(always)]
pub fn smlabb(a: u32, b: u32, acc: i32) -> i32 {
    #[cfg(kiln_dsp)]
    {
        let mut acc = acc;
        // SAFETY: as in `smlad`.
        // The sum is tied to its register, so a running sum stays put in loops.
        unsafe {
            asm!("smlabb {acc}, {a}, {b}, {acc}", acc = inout(reg) acc, a = in(reg) a,
                 b = in(reg) b, options(pure, nomem, nostack));
        }
        acc
    }
    #[cfg(not(kiln_dsp))]
    {
        acc.wrapping_add(lo16(a) * lo16(b))
    }
}

/// SMLATT: `acc + a.hi * b.hi`, wrapping at 32 bits.
#[inline(always)]
pub fn smlatt(a: u32, b: u32, acc: i32) -> i32 {
    #[cfg(kiln_dsp)]
    {
        let mut acc = acc;
        // SAFETY: as in `smlad`.
        // The sum is tied to its register, so a running sum stays put in loops.
        unsafe {
            asm!("smlatt {acc}, {a}, {b}, {acc}", acc = inout(reg) acc, a = in(reg) a,
                 b = in(reg) b, options(pure, nomem, nostack));
        }
        acc
    }
    #[cfg(not(kiln_dsp))]
    {
        acc.wrapping_add(hi16(a) * hi16(b))
    }
}

/// SMMULR: the high word of `a * b`, rounded: `(a * b + 2^31) >> 32`.
#[inline(always)]
pub fn smmulr(a: i32, b: i32) -> i32 {
    #[cfg(kiln_dsp)]
    {
        let r: i32;
        // SAFETY: as in `sxtb16`.
        unsafe {
            asm!("smmulr {r}, {a}, {b}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b,
                 options(pure, nomem, nostack, preserves_flags));
        }
        r
    }
    #[cfg(not(kiln_dsp))]
    {
        ((i64::from(a) * i64::from(b) + (1i64 << 31)) >> 32) as i32
    }
}

/// Bytewise signed maximum of two words of four int8 lanes (SSUB8 then SEL).
#[inline(always)]
pub fn max8(a: u32, b: u32) -> u32 {
    #[cfg(kiln_dsp)]
    {
        let r: u32;
        // SAFETY: register-only DSP instructions; SSUB8 sets the GE flags that SEL reads
        // in the same block (so no `preserves_flags`).
        unsafe {
            asm!("ssub8 {r}, {a}, {b}", "sel {r}, {a}, {b}", r = out(reg) r, a = in(reg) a,
                 b = in(reg) b, options(pure, nomem, nostack));
        }
        r
    }
    #[cfg(not(kiln_dsp))]
    {
        let m = |x: u8, y: u8| (x as i8).max(y as i8) as u8;
        let ([a0, a1, a2, a3], [b0, b1, b2, b3]) = (a.to_le_bytes(), b.to_le_bytes());
        u32::from_le_bytes([m(a0, b0), m(a1, b1), m(a2, b2), m(a3, b3)])
    }
}

/// Bytewise signed minimum of two words of four int8 lanes (SSUB8 then SEL).
#[inline(always)]
pub fn min8(a: u32, b: u32) -> u32 {
    #[cfg(kiln_dsp)]
    {
        let r: u32;
        // SAFETY: as in `max8`.
        unsafe {
            asm!("ssub8 {r}, {a}, {b}", "sel {r}, {b}, {a}", r = out(reg) r, a = in(reg) a,
                 b = in(reg) b, options(pure, nomem, nostack));
        }
        r
    }
    #[cfg(not(kiln_dsp))]
    {
        let m = |x: u8, y: u8| (x as i8).min(y as i8) as u8;
        let ([a0, a1, a2, a3], [b0, b1, b2, b3]) = (a.to_le_bytes(), b.to_le_bytes());
        u32::from_le_bytes([m(a0, b0), m(a1, b1), m(a2, b2), m(a3, b3)])
    }
}

/// Four values saturated to int8 (`SSAT #8`) and packed into the bytes of a word, the
/// first in byte 0 (`BFI`).
#[inline(always)]
pub fn pack_sat8(v: [i32; 4]) -> u32 {
    #[cfg(kiln_dsp)]
    {
        let [a, b, c, d] = v;
        let r: u32;
        // SAFETY: register-only instructions (SSAT may set the sticky Q flag, which
        // nothing reads).
        unsafe {
            asm!(
                "ssat {r}, #8, {a}",
                "ssat {b}, #8, {b}",
                "ssat {c}, #8, {c}",
                "ssat {d}, #8, {d}",
                "bfi {r}, {b}, #8, #8",
                "bfi {r}, {c}, #16, #8",
                "bfi {r}, {d}, #24, #8",
                r = out(reg) r,
                a = in(reg) a,
                b = inout(reg) b => _,
                c = inout(reg) c => _,
                d = inout(reg) d => _,
                options(pure, nomem, nostack),
            );
        }
        r
    }
    #[cfg(not(kiln_dsp))]
    {
        word(v.map(|x| x.clamp(-128, 127) as i8))
    }
}

/// One depthwise tap of four channels: the input word `x` (four int8 values) unpacked
/// into lanes `[0, 2]` and `[1, 3]` (with `SXTAB16`, adding `offset` in both halves of
/// `offset2`, when `OFFSET`; else `SXTB16`), then multiplied lane by lane with the
/// filter word already unpacked the same way into `f`:
/// `acc[c] += (x[c] (+ offset)) * f[c]` (`SMLABB`/`SMLATT`).
///
/// One `asm!` block on DSP targets, so the compiler keeps each tap's six instructions
/// together instead of interleaving taps until the unpacked words spill.
#[inline(always)]
pub fn smla_4ch<const OFFSET: bool>(x: u32, offset2: u32, f: [u32; 2], acc: [i32; 4]) -> [i32; 4] {
    #[cfg(kiln_dsp)]
    {
        let [mut a0, mut a1, mut a2, mut a3] = acc;
        let [fe, fo] = f;
        // SAFETY: register-only DSP instructions; the target has the DSP extension.
        unsafe {
            if OFFSET {
                asm!(
                    "sxtab16 {xe}, {off}, {x}",
                    "sxtab16 {xo}, {off}, {x}, ror #8",
                    "smlabb {a0}, {xe}, {fe}, {a0}",
                    "smlatt {a2}, {xe}, {fe}, {a2}",
                    "smlabb {a1}, {xo}, {fo}, {a1}",
                    "smlatt {a3}, {xo}, {fo}, {a3}",
                    x = in(reg) x, off = in(reg) offset2, fe = in(reg) fe, fo = in(reg) fo,
                    xe = out(reg) _, xo = out(reg) _,
                    a0 = inout(reg) a0, a1 = inout(reg) a1, a2 = inout(reg) a2, a3 = inout(reg) a3,
                    options(pure, nomem, nostack),
                );
            } else {
                asm!(
                    "sxtb16 {xe}, {x}",
                    "sxtb16 {xo}, {x}, ror #8",
                    "smlabb {a0}, {xe}, {fe}, {a0}",
                    "smlatt {a2}, {xe}, {fe}, {a2}",
                    "smlabb {a1}, {xo}, {fo}, {a1}",
                    "smlatt {a3}, {xo}, {fo}, {a3}",
                    x = in(reg) x, fe = in(reg) fe, fo = in(reg) fo,
                    xe = out(reg) _, xo = out(reg) _,
                    a0 = inout(reg) a0, a1 = inout(reg) a1, a2 = inout(reg) a2, a3 = inout(reg) a3,
                    options(pure, nomem, nostack),
                );
            }
        }
        [a0, a1, a2, a3]
    }
    #[cfg(not(kiln_dsp))]
    {
        let (xe, xo) = if OFFSET {
            (sxtab16(offset2, x), sxtab16_ror8(offset2, x))
        } else {
            (sxtb16(x), sxtb16_ror8(x))
        };
        let [fe, fo] = f;
        let [a0, a1, a2, a3] = acc;
        [
            smlabb(xe, fe, a0),
            smlabb(xo, fo, a1),
            smlatt(xe, fe, a2),
            smlatt(xo, fo, a3),
        ]
    }
}

/// The fast requantization of four sums at once (see `requant`), channel `i` with the
/// words `params[i] = [multiplier, scale, right + 1, rounding]`:
/// `((2x + rounding + (x >> 31)) >> (right + 1))` with `x = SMMULR(acc[i] * scale,
/// multiplier)`, the final shift taken like ARM's `ASR` by register (amounts of 32 and
/// more fill with the sign).
///
/// One `asm!` block on DSP targets, each channel's four words in with one `LDM`: six
/// instructions per channel.
#[inline(always)]
pub fn requant4(acc: [i32; 4], params: &[[u32; 4]; 4]) -> [i32; 4] {
    #[cfg(kiln_dsp)]
    {
        let [mut a0, mut a1, mut a2, mut a3] = acc;
        // SAFETY: reads the 64 bytes of `params` (4-aligned, as LDM needs); writes only
        // registers.
        unsafe {
            asm!(
                "ldm {p}!, {{r0, r1, r2, r3}}",
                "mul {a0}, {a0}, r1",
                "smmulr {a0}, {a0}, r0",
                "add r3, r3, {a0}, lsl #1",
                "add r3, r3, {a0}, asr #31",
                "asr {a0}, r3, r2",
                "ldm {p}!, {{r0, r1, r2, r3}}",
                "mul {a1}, {a1}, r1",
                "smmulr {a1}, {a1}, r0",
                "add r3, r3, {a1}, lsl #1",
                "add r3, r3, {a1}, asr #31",
                "asr {a1}, r3, r2",
                "ldm {p}!, {{r0, r1, r2, r3}}",
                "mul {a2}, {a2}, r1",
                "smmulr {a2}, {a2}, r0",
                "add r3, r3, {a2}, lsl #1",
                "add r3, r3, {a2}, asr #31",
                "asr {a2}, r3, r2",
                "ldm {p}!, {{r0, r1, r2, r3}}",
                "mul {a3}, {a3}, r1",
                "smmulr {a3}, {a3}, r0",
                "add r3, r3, {a3}, lsl #1",
                "add r3, r3, {a3}, asr #31",
                "asr {a3}, r3, r2",
                p = inout(reg) params.as_ptr() => _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                a3 = inout(reg) a3,
                out("r0") _,
                out("r1") _,
                out("r2") _,
                out("r3") _,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        [a0, a1, a2, a3]
    }
    #[cfg(not(kiln_dsp))]
    {
        let one = |a: i32, [m, scale, right1, rounding]: [u32; 4]| {
            let x = smmulr(a.wrapping_mul(scale as i32), m as i32);
            let t = (rounding as i32)
                .wrapping_add(x.wrapping_shl(1))
                .wrapping_add(x >> 31);
            // ASR by register: the low byte of the amount, 32 and more fill with the sign.
            t >> (right1 & 0xFF).min(31)
        };
        let [a0, a1, a2, a3] = acc;
        let [p0, p1, p2, p3] = *params;
        [one(a0, p0), one(a1, p1), one(a2, p2), one(a3, p3)]
    }
}

/// One channel's four sums requantized, clamped and stored: `acc[i]` through the
/// channel words `ch = [_, multiplier, scale, right + 1, rounding]` (the arithmetic of
/// [`requant4`]), saturated to int8 ([`pack_sat8`]), clamped bytewise to `[lo, hi]`
/// ([`max8`], [`min8`]) and written to `out[i * stride]`, four pixels of one output
/// channel. Writes nothing unless `out` reaches index `3 * stride`.
///
/// One `asm!` block on DSP targets (41 instructions with the stores): left to LLVM the
/// four output addresses and the channel words spill around the conv's inner loop.
#[inline(always)]
pub fn requant_store4(
    acc: [i32; 4],
    ch: &[u32; 5],
    (lo, hi): (u32, u32),
    out: &mut [i8],
    stride: usize,
) {
    if stride > usize::MAX / 4 || out.len() <= 3 * stride {
        return;
    }
    #[cfg(kiln_dsp)]
    {
        let [a0, a1, a2, a3] = acc;
        // SAFETY: reads the five words of `ch` (4-aligned, as LDRD needs); writes the
        // bytes at offsets 0, stride, 2 * stride and 3 * stride of `out`, all below
        // `out.len()` (checked above); clobbers the flags (SSUB8 sets GE for SEL).
        unsafe {
            asm!(
                "ldrd {t0}, {t1}, [{p}, #4]",
                "mul {a0}, {a0}, {t1}",
                "smmulr {a0}, {a0}, {t0}",
                "mul {a1}, {a1}, {t1}",
                "smmulr {a1}, {a1}, {t0}",
                "mul {a2}, {a2}, {t1}",
                "smmulr {a2}, {a2}, {t0}",
                "mul {a3}, {a3}, {t1}",
                "smmulr {a3}, {a3}, {t0}",
                "ldrd {t0}, {t1}, [{p}, #12]",
                "add {p}, {t1}, {a0}, lsl #1",
                "add {p}, {p}, {a0}, asr #31",
                "asr {a0}, {p}, {t0}",
                "add {p}, {t1}, {a1}, lsl #1",
                "add {p}, {p}, {a1}, asr #31",
                "asr {a1}, {p}, {t0}",
                "add {p}, {t1}, {a2}, lsl #1",
                "add {p}, {p}, {a2}, asr #31",
                "asr {a2}, {p}, {t0}",
                "add {p}, {t1}, {a3}, lsl #1",
                "add {p}, {p}, {a3}, asr #31",
                "asr {a3}, {p}, {t0}",
                "ssat {a0}, #8, {a0}",
                "ssat {a1}, #8, {a1}",
                "ssat {a2}, #8, {a2}",
                "ssat {a3}, #8, {a3}",
                "bfi {a0}, {a1}, #8, #8",
                "bfi {a0}, {a2}, #16, #8",
                "bfi {a0}, {a3}, #24, #8",
                "ssub8 {p}, {a0}, {lo}",
                "sel {a0}, {a0}, {lo}",
                "ssub8 {p}, {a0}, {hi}",
                "sel {a0}, {hi}, {a0}",
                "strb {a0}, [{out}]",
                "lsrs {p}, {a0}, #8",
                "strb {p}, [{out}, {s}]",
                "add {out}, {out}, {s}, lsl #1",
                "lsrs {p}, {a0}, #16",
                "strb {p}, [{out}]",
                "lsrs {p}, {a0}, #24",
                "strb {p}, [{out}, {s}]",
                p = inout(reg) ch.as_ptr() => _,
                a0 = inout(reg) a0 => _,
                a1 = inout(reg) a1 => _,
                a2 = inout(reg) a2 => _,
                a3 = inout(reg) a3 => _,
                lo = in(reg) lo,
                hi = in(reg) hi,
                out = inout(reg) out.as_mut_ptr() => _,
                s = in(reg) stride,
                t0 = out(reg) _,
                t1 = out(reg) _,
                options(nostack),
            );
        }
    }
    #[cfg(not(kiln_dsp))]
    {
        let [_, m, scale, right1, rounding] = *ch;
        let v = requant4(acc, &[[m, scale, right1, rounding]; 4]);
        let bytes = min8(max8(pack_sat8(v), lo), hi).to_le_bytes();
        for (i, b) in bytes.into_iter().enumerate() {
            if let Some(slot) = out.get_mut(i * stride) {
                *slot = b as i8;
            }
        }
    }
}

/// Three depthwise taps of four channels along one input row (a 3-wide filter row):
/// [`smla_4ch`] without offset for `x[t]` and `f[t]`, `t = 0, 1, 2`.
///
/// One `asm!` block on DSP targets that also loads the three input words and the three
/// unpacked filter pairs with immediate offsets (`LDR`, `LDRD`): 24 instructions for 12
/// MACs, where separate taps leave the compiler to spill and reload the filter pairs
/// one word at a time.
#[inline(always)]
pub fn smla_4ch_row3(x: &[u32; 3], f: &[[u32; 2]; 3], acc: [i32; 4]) -> [i32; 4] {
    #[cfg(kiln_dsp)]
    {
        let [mut a0, mut a1, mut a2, mut a3] = acc;
        // SAFETY: reads the 12 bytes of `x` and the 24 bytes of `f` (both 4-aligned, as
        // LDRD needs); writes only registers.
        unsafe {
            asm!(
                "ldr {x}, [{xp}]",
                "ldrd {fe}, {fo}, [{fp}]",
                "sxtb16 {xe}, {x}",
                "sxtb16 {x}, {x}, ror #8",
                "smlabb {a0}, {xe}, {fe}, {a0}",
                "smlatt {a2}, {xe}, {fe}, {a2}",
                "smlabb {a1}, {x}, {fo}, {a1}",
                "smlatt {a3}, {x}, {fo}, {a3}",
                "ldr {x}, [{xp}, #4]",
                "ldrd {fe}, {fo}, [{fp}, #8]",
                "sxtb16 {xe}, {x}",
                "sxtb16 {x}, {x}, ror #8",
                "smlabb {a0}, {xe}, {fe}, {a0}",
                "smlatt {a2}, {xe}, {fe}, {a2}",
                "smlabb {a1}, {x}, {fo}, {a1}",
                "smlatt {a3}, {x}, {fo}, {a3}",
                "ldr {x}, [{xp}, #8]",
                "ldrd {fe}, {fo}, [{fp}, #16]",
                "sxtb16 {xe}, {x}",
                "sxtb16 {x}, {x}, ror #8",
                "smlabb {a0}, {xe}, {fe}, {a0}",
                "smlatt {a2}, {xe}, {fe}, {a2}",
                "smlabb {a1}, {x}, {fo}, {a1}",
                "smlatt {a3}, {x}, {fo}, {a3}",
                xp = in(reg) x.as_ptr(),
                fp = in(reg) f.as_ptr(),
                x = out(reg) _,
                xe = out(reg) _,
                fe = out(reg) _,
                fo = out(reg) _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                a3 = inout(reg) a3,
                options(pure, readonly, nostack),
            );
        }
        [a0, a1, a2, a3]
    }
    #[cfg(not(kiln_dsp))]
    {
        x.iter()
            .zip(f)
            .fold(acc, |acc, (&x, &f)| smla_4ch::<false>(x, 0, f, acc))
    }
}

/// One step of a four-column matrix multiply (the DSP conv's inner loop): filter word
/// `w` (four int8 values) unpacked with `SXTB16`/`SXTB16 ROR #8` into `[w0, w2]` and
/// `[w1, w3]`, `x` holding the even-lane words of columns 0..4 then their odd-lane
/// words: `acc[i] = smlad(x[4 + i], [w1, w3], smlad(x[i], [w0, w2], acc[i]))`.
#[inline(always)]
pub fn smlad_4x1(x: &[u32; 8], w: &[i8; 4], acc: [i32; 4]) -> [i32; 4] {
    let w = word(*w);
    let (we, wo) = (sxtb16(w), sxtb16_ror8(w));
    let [x0, x1, x2, x3, x4, x5, x6, x7] = *x;
    let [a0, a1, a2, a3] = acc;
    [
        smlad(x4, wo, smlad(x0, we, a0)),
        smlad(x5, wo, smlad(x1, we, a1)),
        smlad(x6, wo, smlad(x2, we, a2)),
        smlad(x7, wo, smlad(x3, we, a3)),
    ]
}

/// The inner loop of the DSP conv: [`smlad_4x1`] over the groups `cols[g]`, `w[g]` for
/// every `g` below the shorter length.
///
/// One `asm!` loop on DSP targets, two groups per iteration, 15 instructions per group
/// (16 MACs): each filter word is loaded and unpacked in place twice (its even lanes,
/// then its odd lanes), and each half-group of four column words comes in with one
/// `LDM` into r0-r3, which leaves exactly enough registers (r7 is the frame pointer, r6
/// LLVM's) for the pointers, the count and the four sums. Left to LLVM, the loop
/// materializes every address in a register and spills.
#[inline(always)]
pub fn smlad_4x1_run(cols: &[[u32; 8]], w: &[[i8; 4]], acc: [i32; 4]) -> [i32; 4] {
    let n = cols.len().min(w.len());
    let (pairs, odd) = (n / 2, n % 2 == 1);
    #[cfg(kiln_dsp)]
    let acc = if pairs == 0 {
        acc
    } else {
        let [mut a0, mut a1, mut a2, mut a3] = acc;
        // SAFETY: reads `2 * pairs <= n` groups of both slices: 32-byte column groups
        // (4-aligned, as LDM needs) and 4-byte filter words (LDR allows unaligned
        // addresses on ARMv7-M); writes only registers (and the flags, for the loop).
        unsafe {
            asm!(
                "2:",
                "ldr {w}, [{wp}]",
                "sxtb16 {w}, {w}",
                "ldm {xp}!, {{r0, r1, r2, r3}}",
                "smlad {a0}, r0, {w}, {a0}",
                "smlad {a1}, r1, {w}, {a1}",
                "smlad {a2}, r2, {w}, {a2}",
                "smlad {a3}, r3, {w}, {a3}",
                "ldr {w}, [{wp}], #4",
                "sxtb16 {w}, {w}, ror #8",
                "ldm {xp}!, {{r0, r1, r2, r3}}",
                "smlad {a0}, r0, {w}, {a0}",
                "smlad {a1}, r1, {w}, {a1}",
                "smlad {a2}, r2, {w}, {a2}",
                "smlad {a3}, r3, {w}, {a3}",
                "ldr {w}, [{wp}]",
                "sxtb16 {w}, {w}",
                "ldm {xp}!, {{r0, r1, r2, r3}}",
                "smlad {a0}, r0, {w}, {a0}",
                "smlad {a1}, r1, {w}, {a1}",
                "smlad {a2}, r2, {w}, {a2}",
                "smlad {a3}, r3, {w}, {a3}",
                "ldr {w}, [{wp}], #4",
                "sxtb16 {w}, {w}, ror #8",
                "ldm {xp}!, {{r0, r1, r2, r3}}",
                "smlad {a0}, r0, {w}, {a0}",
                "smlad {a1}, r1, {w}, {a1}",
                "smlad {a2}, r2, {w}, {a2}",
                "smlad {a3}, r3, {w}, {a3}",
                "subs {n}, {n}, #1",
                "bne 2b",
                xp = inout(reg) cols.as_ptr() => _,
                wp = inout(reg) w.as_ptr() => _,
                n = inout(reg) pairs => _,
                w = out(reg) _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                a3 = inout(reg) a3,
                out("r0") _,
                out("r1") _,
                out("r2") _,
                out("r3") _,
                options(pure, readonly, nostack),
            );
        }
        [a0, a1, a2, a3]
    };
    #[cfg(not(kiln_dsp))]
    let acc = cols
        .iter()
        .zip(w)
        .take(2 * pairs)
        .fold(acc, |acc, (x, w)| smlad_4x1(x, w, acc));
    let last = n.wrapping_sub(1);
    match (cols.get(last), w.get(last)) {
        (Some(x), Some(w)) if odd => smlad_4x1(x, w, acc),
        _ => acc,
    }
}

/// A block of the DSP conv, four pixels by `n` output channels: for each channel `j`
/// below `n = min(rows.len() / cols.len(), chs.len())`, the dot products of its filter
/// row `rows[j * g..(j + 1) * g]` (`g = cols.len()` filter words) with the four
/// interleaved columns `cols` ([`smlad_4x1`] over the groups) from the bias `chs[j][0]`
/// on, then [`requant_store4`] of the four sums with channel `chs[j]` into
/// `out[j..]` at `stride`. Writes nothing unless `g` is even and at least 2 and `out`
/// holds `3 * stride + n` bytes.
///
/// One `asm!` block on DSP targets for the whole channel loop: the pointers and
/// constants live in nine words pushed on the stack (one `LDM` restores the five the
/// dot products need), so all twelve free registers go to the inner loop of
/// [`smlad_4x1_run`] and the requantization and stores take 57 instructions per channel
/// where the compiled loop around separate blocks took about 85. Out of line: one copy
/// of the block serves every conv (it is called once per four pixels).
#[inline(never)]
pub fn conv_block4(
    cols: &[[u32; 8]],
    rows: &[[i8; 4]],
    chs: &[[u32; 5]],
    bounds: (u32, u32),
    out: &mut [i8],
    stride: usize,
) {
    let g = cols.len();
    let n = rows.len().checked_div(g).unwrap_or(0).min(chs.len());
    let fits = stride
        .checked_mul(3)
        .and_then(|s| s.checked_add(n))
        .is_some_and(|need| out.len() >= need);
    if g < 2 || !g.is_multiple_of(2) || n == 0 || !fits {
        return;
    }
    #[cfg(kiln_dsp)]
    {
        let (lo, hi) = bounds;
        let end = out.as_mut_ptr().wrapping_add(n);
        // SAFETY: reads the `g` column groups (4-aligned, as LDM needs) once per channel,
        // `n * g <= rows.len()` filter words (LDR allows unaligned addresses on ARMv7-M)
        // and `n` channel words (4-aligned, as LDRD needs); writes the bytes
        // `j + i * stride` (`j < n`, `i < 4`) of `out`, all below `3 * stride + n <=
        // out.len()`. The nine pushed words are popped before the block ends; the
        // flags are clobbered (the loops, SSUB8).
        unsafe {
            asm!(
                "push {{r0, r1, r2, r3, r4, r5, r8, r9, r10}}",
                // Channel loop: [sp] = channel, out, cols, filter, pairs, lo, hi,
                // stride, end.
                "2:",
                "ldm sp, {{r1, r2, r4, r5, r8}}",
                "ldr r10, [r1]",
                "mov r11, r10",
                "mov r12, r10",
                "mov lr, r10",
                // Four groups per iteration; an odd number of pairs enters at the
                // second two.
                "lsrs r8, r8, #1",
                "bcs 5f",
                "3:",
                "ldr r9, [r5]",
                "sxtb16 r9, r9",
                "ldm r4!, {{r0, r1, r2, r3}}",
                "smlad r10, r0, r9, r10",
                "smlad r11, r1, r9, r11",
                "smlad r12, r2, r9, r12",
                "smlad lr, r3, r9, lr",
                "ldr r9, [r5], #4",
                "sxtb16 r9, r9, ror #8",
                "ldm r4!, {{r0, r1, r2, r3}}",
                "smlad r10, r0, r9, r10",
                "smlad r11, r1, r9, r11",
                "smlad r12, r2, r9, r12",
                "smlad lr, r3, r9, lr",
                "ldr r9, [r5]",
                "sxtb16 r9, r9",
                "ldm r4!, {{r0, r1, r2, r3}}",
                "smlad r10, r0, r9, r10",
                "smlad r11, r1, r9, r11",
                "smlad r12, r2, r9, r12",
                "smlad lr, r3, r9, lr",
                "ldr r9, [r5], #4",
                "sxtb16 r9, r9, ror #8",
                "ldm r4!, {{r0, r1, r2, r3}}",
                "smlad r10, r0, r9, r10",
                "smlad r11, r1, r9, r11",
                "smlad r12, r2, r9, r12",
                "smlad lr, r3, r9, lr",
                "4:",
                "ldr r9, [r5]",
                "sxtb16 r9, r9",
                "ldm r4!, {{r0, r1, r2, r3}}",
                "smlad r10, r0, r9, r10",
                "smlad r11, r1, r9, r11",
                "smlad r12, r2, r9, r12",
                "smlad lr, r3, r9, lr",
                "ldr r9, [r5], #4",
                "sxtb16 r9, r9, ror #8",
                "ldm r4!, {{r0, r1, r2, r3}}",
                "smlad r10, r0, r9, r10",
                "smlad r11, r1, r9, r11",
                "smlad r12, r2, r9, r12",
                "smlad lr, r3, r9, lr",
                "ldr r9, [r5]",
                "sxtb16 r9, r9",
                "ldm r4!, {{r0, r1, r2, r3}}",
                "smlad r10, r0, r9, r10",
                "smlad r11, r1, r9, r11",
                "smlad r12, r2, r9, r12",
                "smlad lr, r3, r9, lr",
                "ldr r9, [r5], #4",
                "sxtb16 r9, r9, ror #8",
                "ldm r4!, {{r0, r1, r2, r3}}",
                "smlad r10, r0, r9, r10",
                "smlad r11, r1, r9, r11",
                "smlad r12, r2, r9, r12",
                "smlad lr, r3, r9, lr",
                "subs r8, r8, #1",
                "bne 3b",
                "b 6f",
                "5:",
                "adds r8, r8, #1",
                "b 4b",
                "6:",
                // The next channel's filter row starts where this one ended.
                "str r5, [sp, #12]",
                "ldrd r1, r2, [sp]",
                // requant4's arithmetic with this channel's words.
                "ldrd r3, r4, [r1, #4]",
                "mul r10, r10, r4",
                "smmulr r10, r10, r3",
                "mul r11, r11, r4",
                "smmulr r11, r11, r3",
                "mul r12, r12, r4",
                "smmulr r12, r12, r3",
                "mul lr, lr, r4",
                "smmulr lr, lr, r3",
                "ldrd r3, r4, [r1, #12]",
                "add r5, r4, r10, lsl #1",
                "add r5, r5, r10, asr #31",
                "asr r10, r5, r3",
                "add r5, r4, r11, lsl #1",
                "add r5, r5, r11, asr #31",
                "asr r11, r5, r3",
                "add r5, r4, r12, lsl #1",
                "add r5, r5, r12, asr #31",
                "asr r12, r5, r3",
                "add r5, r4, lr, lsl #1",
                "add r5, r5, lr, asr #31",
                "asr lr, r5, r3",
                // Saturate, pack, clamp bytewise, store at out + i * stride.
                "ssat r10, #8, r10",
                "ssat r11, #8, r11",
                "ssat r12, #8, r12",
                "ssat lr, #8, lr",
                "bfi r10, r11, #8, #8",
                "bfi r10, r12, #16, #8",
                "bfi r10, lr, #24, #8",
                "ldrd r3, r4, [sp, #20]",
                "ssub8 r5, r10, r3",
                "sel r10, r10, r3",
                "ssub8 r5, r10, r4",
                "sel r10, r4, r10",
                "ldr r3, [sp, #28]",
                "strb r10, [r2]",
                "lsrs r5, r10, #8",
                "strb r5, [r2, r3]",
                "add r4, r2, r3, lsl #1",
                "lsrs r5, r10, #16",
                "strb r5, [r4]",
                "lsrs r5, r10, #24",
                "strb r5, [r4, r3]",
                "adds r1, #20",
                "adds r2, #1",
                "strd r1, r2, [sp]",
                "ldr r3, [sp, #32]",
                "cmp r2, r3",
                "bne 2b",
                "add sp, #36",
                inout("r0") chs.as_ptr() => _,
                inout("r1") out.as_mut_ptr() => _,
                inout("r2") cols.as_ptr() => _,
                inout("r3") rows.as_ptr() => _,
                inout("r4") g / 2 => _,
                inout("r5") lo => _,
                inout("r8") hi => _,
                inout("r9") stride => _,
                inout("r10") end => _,
                out("r11") _,
                out("r12") _,
                out("lr") _,
            );
        }
    }
    #[cfg(not(kiln_dsp))]
    for (j, ch) in chs.iter().take(n).enumerate() {
        let row = rows.get(j * g..(j + 1) * g).unwrap_or(&[]);
        let acc = cols
            .iter()
            .zip(row)
            .fold([ch[0] as i32; 4], |acc, (x, w)| smlad_4x1(x, w, acc));
        if let Some(out) = out.get_mut(j..) {
            requant_store4(acc, ch, bounds, out, stride);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Edge bytes and halves the tests always include.
    const EDGES: [u32; 6] = [
        0,
        0xFFFF_FFFF,
        0x8080_8080,
        0x7F7F_7F7F,
        0x8000_7FFF,
        0x0180_FF7F,
    ];

    fn bytes(x: u32) -> [i32; 4] {
        x.to_le_bytes().map(|b| i32::from(b as i8))
    }

    /// The manual's definitions, written independently of the functions above.
    fn check(a: u32, b: u32, acc: i32) {
        let [a0, a1, a2, a3] = bytes(a);
        let (alo, ahi, blo, bhi) = (lo16(a), hi16(a), lo16(b), hi16(b));
        assert_eq!(sxtb16(a), pack16(a0, a2));
        assert_eq!(sxtb16_ror8(a), pack16(a1, a3));
        let [b0, b1, b2, b3] = bytes(b);
        assert_eq!(sxtab16(a, b), pack16(alo + b0, ahi + b2));
        assert_eq!(sxtab16_ror8(a, b), pack16(alo + b1, ahi + b3));
        let sum = i64::from(acc) + i64::from(alo * blo) + i64::from(ahi * bhi);
        assert_eq!(smlad(a, b, acc), sum as i32);
        assert_eq!(
            smlabb(a, b, acc),
            (i64::from(acc) + i64::from(alo * blo)) as i32
        );
        assert_eq!(
            smlatt(a, b, acc),
            (i64::from(acc) + i64::from(ahi * bhi)) as i32
        );
        let (ai, bi) = (a as i32, b as i32);
        let wide = (i128::from(ai) * i128::from(bi) + (1i128 << 31)) >> 32;
        assert_eq!(smmulr(ai, bi), wide as i32);
        let bb = bytes(b);
        let max: [u8; 4] = core::array::from_fn(|i| bytes(a)[i].max(bb[i]) as u8);
        let min: [u8; 4] = core::array::from_fn(|i| bytes(a)[i].min(bb[i]) as u8);
        assert_eq!(max8(a, b), u32::from_le_bytes(max));
        assert_eq!(min8(a, b), u32::from_le_bytes(min));
    }

    #[test]
    fn edge_values() {
        for a in EDGES {
            for b in EDGES {
                for acc in [0, -1, i32::MAX, i32::MIN, 12345] {
                    check(a, b, acc);
                }
            }
        }
        assert_eq!(word([1, -1, 2, -128]), 0x80_02_FF_01);
        assert_eq!(splat16(-3), 0xFFFD_FFFD);
        assert_eq!(splat8(-2), 0xFEFE_FEFE);
        assert_eq!((lo16(pack16(-5, 7)), hi16(pack16(-5, 7))), (-5, 7));
    }

    proptest! {
        #[test]
        fn random_values(a: u32, b: u32, acc: i32) {
            check(a, b, acc);
        }

        #[test]
        fn four_column_run_is_steps(
            x in proptest::collection::vec(any::<[u32; 8]>(), 0..7),
            w in proptest::collection::vec(any::<[i8; 4]>(), 0..7),
            acc: [i32; 4],
        ) {
            let steps = x.iter().zip(&w).fold(acc, |acc, (x, w)| smlad_4x1(x, w, acc));
            prop_assert_eq!(smlad_4x1_run(&x, &w, acc), steps);
        }

        #[test]
        fn four_requantizations(acc: [i32; 4], params: [[u32; 4]; 4]) {
            let want: [i32; 4] = core::array::from_fn(|i| {
                let [m, scale, right1, rounding] = params[i];
                let x = ((i64::from(acc[i].wrapping_mul(scale as i32)) * i64::from(m as i32) + (1 << 31)) >> 32) as i32;
                let t = (rounding as i32).wrapping_add(x.wrapping_mul(2)).wrapping_add(if x < 0 { -1 } else { 0 });
                (i64::from(t) >> (right1 & 0xFF).min(63)) as i32
            });
            prop_assert_eq!(requant4(acc, &params), want);
        }

        #[test]
        fn requantized_stores(acc: [i32; 4], ch: [u32; 5], lo: i8, hi: i8, stride in 1usize..4) {
            let (lo, hi) = (splat8(lo), splat8(hi));
            let [_, m, scale, right1, rounding] = ch;
            let v = requant4(acc, &[[m, scale, right1, rounding]; 4]);
            let want = min8(max8(pack_sat8(v), lo), hi).to_le_bytes();
            let mut out = vec![0x55i8; 3 * stride + 1];
            requant_store4(acc, &ch, (lo, hi), &mut out, stride);
            for (i, &b) in want.iter().enumerate() {
                prop_assert_eq!(out[i * stride], b as i8);
            }
            let mut short = vec![0x55i8; 3 * stride];
            requant_store4(acc, &ch, (lo, hi), &mut short, stride);
            prop_assert!(short.iter().all(|&b| b == 0x55));
        }

        #[test]
        fn conv_blocks_are_steps(
            x in proptest::collection::vec(any::<[u32; 8]>(), 1..6),
            w in proptest::collection::vec(any::<[i8; 4]>(), 1..60),
            chs in proptest::collection::vec(any::<[u32; 5]>(), 1..5),
            lo: i8, hi: i8,
            stride in 1usize..7,
        ) {
            let bounds = (splat8(lo), splat8(hi));
            let g = x.len();
            let n = (w.len() / g).min(chs.len());
            let mut got = vec![0x55i8; 3 * stride + n + 2];
            conv_block4(&x, &w, &chs, bounds, &mut got, stride);
            let mut want = vec![0x55i8; got.len()];
            if g % 2 == 0 && n > 0 {
                for j in 0..n {
                    let acc = x.iter().zip(&w[j * g..]).fold([chs[j][0] as i32; 4], |a, (x, w)| smlad_4x1(x, w, a));
                    requant_store4(acc, &chs[j], bounds, &mut want[j..], stride);
                }
            }
            prop_assert_eq!(got, want);
        }

        #[test]
        fn depthwise_row_is_three_taps(x: [u32; 3], f: [[u32; 2]; 3], acc: [i32; 4]) {
            let taps = (0..3).fold(acc, |acc, t| smla_4ch::<false>(x[t], 0, f[t], acc));
            prop_assert_eq!(smla_4ch_row3(&x, &f, acc), taps);
        }

        #[test]
        fn saturating_pack(v: [i32; 4], small: [i8; 4]) {
            for v in [v, small.map(i32::from)] {
                prop_assert_eq!(pack_sat8(v), word(v.map(|x| x.clamp(-128, 127) as i8)));
            }
        }

        #[test]
        fn depthwise_tap(x: [i8; 4], w: [i8; 4], offset in -128i32..=128, acc: [i32; 4]) {
            let f = word(w);
            let f = [sxtb16(f), sxtb16_ror8(f)];
            let want: [i32; 4] = core::array::from_fn(|c| {
                (i64::from(acc[c]) + (i64::from(x[c]) + i64::from(offset)) * i64::from(w[c])) as i32
            });
            prop_assert_eq!(smla_4ch::<true>(word(x), splat16(offset), f, acc), want);
            let plain: [i32; 4] = core::array::from_fn(|c| {
                (i64::from(acc[c]) + i64::from(x[c]) * i64::from(w[c])) as i32
            });
            prop_assert_eq!(smla_4ch::<false>(word(x), 0, f, acc), plain);
        }

        #[test]
        fn four_column_step(x: [u32; 8], w: [i8; 4], acc: [i32; 4]) {
            let got = smlad_4x1(&x, &w, acc);
            for i in 0..4 {
                // x[i] holds column i's lanes 0 and 2, x[4 + i] its lanes 1 and 3.
                let lanes = [lo16(x[i]), lo16(x[4 + i]), hi16(x[i]), hi16(x[4 + i])];
                let want = (0..4).fold(i64::from(acc[i]), |sum, j| {
                    sum + i64::from(lanes[j]) * i64::from(w[j])
                });
                prop_assert_eq!(got[i], want as i32);
            }
        }
    }
}
