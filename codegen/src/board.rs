//! The boards kiln knows: chip, Rust target, flash and RAM, default stack. One table
//! serves `kiln compile --board` (fit check), `kiln flash` (`--dry-run` memory map,
//! probe-rs chip name), `kiln emulate`, and the firmware build scripts in `boards/`
//! (which write their `memory.x` from it).

use crate::compile::Target;
use std::fmt;

/// One contiguous memory region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub origin: u32,
    /// Size in bytes.
    pub bytes: u32,
}

impl Region {
    /// Whether `addr` lies inside the region.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= u64::from(self.origin) && addr < u64::from(self.origin) + u64::from(self.bytes)
    }
}

/// A board: what kiln needs to build, fit-check and flash firmware for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Board {
    /// Name on the command line (`--board`).
    pub name: &'static str,
    /// The chip, as probe-rs names it (QEMU machines: the QEMU machine name).
    pub chip: &'static str,
    /// The core, which selects the kernels and the Rust target.
    pub target: Target,
    /// Whether it is a QEMU machine rather than hardware.
    pub emulated: bool,
    /// Where code and constants live (for QEMU, the code RAM the image loads into).
    pub flash: Region,
    /// Where `.data`, `.bss`, the arena and the stack live.
    pub ram: Region,
    /// Stack bytes reserved by default on top of the static RAM.
    pub stack_bytes: u32,
}

const KIB: u32 = 1024;
const MIB: u32 = 1024 * 1024;

/// Every board, in the order `--help` lists them.
pub const BOARDS: [Board; 5] = [
    Board {
        name: "nrf52840-dk",
        chip: "nRF52840_xxAA",
        target: Target::CortexM4,
        emulated: false,
        flash: Region {
            origin: 0x0000_0000,
            bytes: MIB,
        },
        ram: Region {
            origin: 0x2000_0000,
            bytes: 256 * KIB,
        },
        stack_bytes: 16 * KIB,
    },
    Board {
        // DTCM (128 KiB), SRAM1 (368 KiB) and SRAM2 (16 KiB) are contiguous.
        name: "nucleo-f767zi",
        chip: "STM32F767ZITx",
        target: Target::CortexM7,
        emulated: false,
        flash: Region {
            origin: 0x0800_0000,
            bytes: 2 * MIB,
        },
        ram: Region {
            origin: 0x2000_0000,
            bytes: 512 * KIB,
        },
        stack_bytes: 16 * KIB,
    },
    Board {
        // QEMU's mps2 boards: 4 MiB SSRAM1 at 0 for code, 4 MiB SSRAM2/3 for data.
        name: "mps2-an386",
        chip: "mps2-an386",
        target: Target::CortexM4,
        emulated: true,
        flash: Region {
            origin: 0x0000_0000,
            bytes: 4 * MIB,
        },
        ram: Region {
            origin: 0x2000_0000,
            bytes: 4 * MIB,
        },
        stack_bytes: 64 * KIB,
    },
    Board {
        name: "mps2-an385",
        chip: "mps2-an385",
        target: Target::CortexM3,
        emulated: true,
        flash: Region {
            origin: 0x0000_0000,
            bytes: 4 * MIB,
        },
        ram: Region {
            origin: 0x2000_0000,
            bytes: 4 * MIB,
        },
        stack_bytes: 64 * KIB,
    },
    Board {
        // BBC micro:bit v1 (nRF51822, Cortex-M0; built as ARMv6-M): the small one.
        name: "microbit",
        chip: "nRF51822_xxAA",
        target: Target::CortexM0Plus,
        emulated: false,
        flash: Region {
            origin: 0x0000_0000,
            bytes: 256 * KIB,
        },
        ram: Region {
            origin: 0x2000_0000,
            bytes: 16 * KIB,
        },
        stack_bytes: 2 * KIB,
    },
];

/// The board called `name`, or an error listing the known ones.
pub fn find(name: &str) -> Result<&'static Board, String> {
    BOARDS.iter().find(|b| b.name == name).ok_or_else(|| {
        let names: Vec<&str> = BOARDS.iter().map(|b| b.name).collect();
        format!(
            "unknown board '{name}', expected one of {}",
            names.join(", ")
        )
    })
}

/// What a model (and the code around it) needs from a board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    /// The model's arena.
    pub arena: u64,
    /// The weights blob (in flash).
    pub weights: u64,
    /// Code and other read-only data besides the weights (0 when not measured).
    pub code: u64,
    /// Other static RAM (`.data` + `.bss` besides the arena; 0 when not measured).
    pub static_ram: u64,
}

/// A model that does not fit a board; the message names both figures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FitError {
    /// RAM overflows.
    #[error("does not fit {board}'s RAM: arena {arena} + stack {stack} + other static RAM {other} = {total} bytes > {available} bytes of RAM")]
    Ram {
        /// The board.
        board: &'static str,
        /// Arena bytes.
        arena: u64,
        /// Stack bytes.
        stack: u64,
        /// Other static RAM.
        other: u64,
        /// Their sum.
        total: u64,
        /// The board's RAM.
        available: u64,
    },
    /// Flash overflows.
    #[error("does not fit {board}'s flash: weights {weights} + code {code} = {total} bytes > {available} bytes of flash")]
    Flash {
        /// The board.
        board: &'static str,
        /// Weight bytes.
        weights: u64,
        /// Code bytes.
        code: u64,
        /// Their sum.
        total: u64,
        /// The board's flash.
        available: u64,
    },
}

/// How full a board is once the model is on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    /// RAM bytes used (arena + stack + other static RAM).
    pub ram_used: u64,
    /// Flash bytes used (weights + code).
    pub flash_used: u64,
}

impl Board {
    /// Checks `needs` against the board's RAM (with its default stack) and flash; RAM
    /// is checked first.
    pub fn check_fit(&self, needs: &Needs) -> Result<Fit, FitError> {
        let stack = u64::from(self.stack_bytes);
        let ram_used = needs.arena + stack + needs.static_ram;
        if ram_used > u64::from(self.ram.bytes) {
            return Err(FitError::Ram {
                board: self.name,
                arena: needs.arena,
                stack,
                other: needs.static_ram,
                total: ram_used,
                available: u64::from(self.ram.bytes),
            });
        }
        let flash_used = needs.weights + needs.code;
        if flash_used > u64::from(self.flash.bytes) {
            return Err(FitError::Flash {
                board: self.name,
                weights: needs.weights,
                code: needs.code,
                total: flash_used,
                available: u64::from(self.flash.bytes),
            });
        }
        Ok(Fit {
            ram_used,
            flash_used,
        })
    }

    /// A cortex-m-rt `memory.x` for the board: FLASH and RAM from the table.
    pub fn memory_x(&self) -> String {
        format!(
            "/* {name} ({chip}): generated by kiln from its board table */\nMEMORY\n{{\n  FLASH : ORIGIN = {:#010x}, LENGTH = {}K\n  RAM : ORIGIN = {:#010x}, LENGTH = {}K\n}}\n",
            self.flash.origin,
            self.flash.bytes / KIB,
            self.ram.origin,
            self.ram.bytes / KIB,
            name = self.name,
            chip = self.chip,
        )
    }
}

impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {}): flash {} KiB at {:#010x}, RAM {} KiB at {:#010x}",
            self.name,
            self.chip,
            self.target.name(),
            self.flash.bytes / KIB,
            self.flash.origin,
            self.ram.bytes / KIB,
            self.ram.origin
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_board_has_a_device_target_and_sane_regions() {
        for b in &BOARDS {
            assert!(b.target.triple().is_some(), "{}", b.name);
            assert_eq!(find(b.name).unwrap(), b);
            assert!(b.stack_bytes < b.ram.bytes, "{}", b.name);
            assert!(!b.flash.contains(u64::from(b.ram.origin)), "{}", b.name);
        }
        let e = find("arduino").unwrap_err();
        assert!(e.contains("nrf52840-dk") && e.contains("mps2-an385"), "{e}");
    }

    #[test]
    fn fit_errors_name_both_figures() {
        let b = find("microbit").unwrap();
        let e = b
            .check_fit(&Needs {
                arena: 16_000,
                weights: 24_368,
                ..Default::default()
            })
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("arena 16000 + stack 2048"), "{text}");
        assert!(text.contains("18048 bytes > 16384 bytes of RAM"), "{text}");

        let e = b
            .check_fit(&Needs {
                arena: 1000,
                weights: 250_000,
                code: 20_000,
                static_ram: 0,
            })
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("weights 250000 + code 20000 = 270000 bytes > 262144 bytes of flash"),
            "{text}"
        );

        let fit = find("nrf52840-dk")
            .unwrap()
            .check_fit(&Needs {
                arena: 16_000,
                weights: 24_368,
                code: 5_000,
                static_ram: 8,
            })
            .unwrap();
        assert_eq!(fit.ram_used, 16_000 + 16 * 1024 + 8);
        assert_eq!(fit.flash_used, 29_368);
    }

    #[test]
    fn memory_x_comes_from_the_table() {
        let m = find("nucleo-f767zi").unwrap().memory_x();
        assert!(
            m.contains("FLASH : ORIGIN = 0x08000000, LENGTH = 2048K"),
            "{m}"
        );
        assert!(
            m.contains("RAM : ORIGIN = 0x20000000, LENGTH = 512K"),
            "{m}"
        );
    }
}
