//! `kiln flash MODEL --board B [--dry-run]`: builds the board's example firmware in
//! `boards/B` with the model (through `KILN_MODEL` and its build script), checks that
//! the ELF fits the board's flash and RAM and prints its memory map, then flashes it,
//! resets the chip and streams the defmt log over RTT.
//!
//! # Why probe-rs is an external program here
//!
//! Flashing, reset, RTT and defmt decoding are done by the `probe-rs` command-line tool
//! (`probe-rs run --chip CHIP ELF`), not by linking the probe-rs library. The library
//! adds minutes (4 min 19 s measured for a fresh debug build here on 2 cores) to every fresh build of
//! `kiln`, and CI builds it several times, while the tool is needed only by people
//! holding a board. So the default `kiln` does everything that needs no probe itself:
//! the build, the fit check and memory map (`--dry-run`, read with `llvm-objdump`
//! against kiln's board table) and finding debug probes, which it does by reading the
//! USB devices in sysfs (`/sys/bus/usb/devices`, J-Link, ST-Link and CMSIS-DAP/DAPLink
//! vendor and product ids). Without a probe it stops after the build with "no debug
//! probe found"; with one it runs `probe-rs`, or says how to install it
//! (`cargo install probe-rs-tools --locked`). Both paths are tested in CI without
//! hardware. The cost: probes that sysfs cannot see (non-Linux hosts) are reported
//! as missing, and `probe-rs` must be installed once (about 23 minutes on 2 cores).
//!
//! The cargo feature `probe-rs` (`cargo install --path host-tools/cli --features
//! probe-rs`, a few more minutes of build; no libudev needed because CMSIS-DAP v1
//! HID probes are left out) links the probe-rs library and `defmt-decoder` instead:
//! kiln then lists probes, flashes, resets, reads RTT channel 0 and decodes the defmt
//! frames with the ELF's table itself, and stops at the firmware's `kiln: done`. CI
//! only checks that this feature compiles (it cannot be run without hardware).

use anyhow::{bail, Context};
use kiln_codegen::board::{self, Board, Region};
use kiln_codegen::emit::rust::probe::llvm_tool;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Arguments of `kiln flash`.
#[derive(clap::Args)]
pub struct Args {
    /// The model file (.tflite or .onnx).
    model: PathBuf,
    /// The board: nrf52840-dk or nucleo-f767zi.
    #[arg(long, value_parser = parse_board)]
    board: &'static Board,
    /// Build and check that the firmware fits the board's flash and RAM, print its
    /// memory map, and stop (needs no probe).
    #[arg(long)]
    dry_run: bool,
    /// The firmware crate to build; defaults to kiln's `boards/<board>`.
    #[arg(long)]
    firmware: Option<PathBuf>,
}

fn parse_board(name: &str) -> Result<&'static Board, String> {
    board::find(name)
}

/// Builds, checks and (unless `--dry-run`) flashes and streams the log.
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let board = args.board;
    if board.emulated {
        bail!(
            "{} is a QEMU machine, not a board to flash: use `kiln emulate`",
            board.name
        );
    }
    let kiln = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let boards = std::fs::canonicalize(&kiln).unwrap_or(kiln).join("boards");
    let firmware = args.firmware.unwrap_or_else(|| boards.join(board.name));
    if !firmware.join("Cargo.toml").is_file() {
        bail!(
            "no firmware crate for {} at {} (kiln ships boards/nrf52840-dk and boards/nucleo-f767zi; pass --firmware DIR)",
            board.name,
            firmware.display()
        );
    }
    let model = std::fs::canonicalize(&args.model)
        .with_context(|| format!("{}: cannot read the model", args.model.display()))?;
    let elf = build(&firmware, board, &model)?;
    let map = MemoryMap::read(&elf, board)?;
    print!("{}", map.render(&elf));
    map.check()?;
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    flash(&elf, board)
}

/// Flashes through the probe-rs library.
#[cfg(feature = "probe-rs")]
fn flash(elf: &Path, board: &Board) -> anyhow::Result<ExitCode> {
    with_library::flash_and_stream(elf, board)?;
    Ok(ExitCode::SUCCESS)
}

/// Flashes through the probe-rs tool, after finding a probe in sysfs.
#[cfg(not(feature = "probe-rs"))]
fn flash(elf: &Path, board: &Board) -> anyhow::Result<ExitCode> {
    let probes = find_probes(&usb_sysfs());
    if probes.is_empty() {
        bail!(
            "no debug probe found: connect {}'s debug USB port (looked for J-Link, ST-Link and CMSIS-DAP probes in {}); --dry-run builds and checks without one",
            board.name,
            usb_sysfs().display()
        );
    }
    println!("debug probe: {}", probes.join(", "));
    let Some(probe_rs) = which("probe-rs") else {
        bail!(
            "found {}, but flashing needs the probe-rs tool: run `apt-get install -y libudev-dev pkg-config && cargo install probe-rs-tools --locked` (about 23 minutes), or rebuild kiln with the probe-rs library (`cargo install --path host-tools/cli --features probe-rs`, a few minutes more), then `kiln flash` again",
            probes.join(", ")
        );
    };
    // probe-rs flashes, resets, attaches RTT and decodes defmt with the ELF's table.
    let status = Command::new(probe_rs)
        .args(["run", "--chip", board.chip])
        .arg(elf)
        .status()
        .context("running probe-rs")?;
    if !status.success() {
        bail!("probe-rs run --chip {} failed ({status})", board.chip);
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln flash` with the probe-rs library linked (cargo feature `probe-rs`).
#[cfg(feature = "probe-rs")]
mod with_library {
    use anyhow::{bail, Context};
    use defmt_decoder::{DecodeError, Table};
    use kiln_codegen::board::Board;
    use probe_rs::flashing::{download_file, ElfLoader, ElfOptions};
    use probe_rs::probe::list::Lister;
    use probe_rs::rtt::Rtt;
    use probe_rs::Permissions;
    use std::path::Path;
    use std::time::Duration;

    /// Flashes `elf`, resets the core and prints the decoded defmt log until the
    /// firmware says `kiln: done`.
    pub fn flash_and_stream(elf: &Path, board: &Board) -> anyhow::Result<()> {
        let bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
        let table = Table::parse(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: defmt table: {e}", elf.display()))?
            .with_context(|| format!("{}: no defmt table", elf.display()))?;
        let probes = Lister::new().list_all();
        let Some(info) = probes.first() else {
            bail!(
                "no debug probe found: connect {}'s debug USB port; --dry-run builds and checks without one",
                board.name
            );
        };
        println!("debug probe: {info:?}");
        let probe = info.open().context("opening the debug probe")?;
        let mut session = probe
            .attach(board.chip, Permissions::default())
            .with_context(|| format!("attaching to {}", board.chip))?;
        download_file(&mut session, elf, ElfLoader(ElfOptions::default())).context("flashing")?;
        let mut core = session.core(0).context("selecting core 0")?;
        core.reset().context("resetting the core")?;
        let mut rtt = None;
        for _ in 0..100 {
            match Rtt::attach(&mut core) {
                Ok(r) => {
                    rtt = Some(r);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let mut rtt = rtt.context("the firmware set up no RTT control block within 5 s")?;
        let channel = rtt
            .up_channel(0)
            .context("the firmware has no RTT up channel")?;
        let mut decoder = table.new_stream_decoder();
        let mut buf = [0u8; 1024];
        loop {
            let n = channel.read(&mut core, &mut buf).context("reading RTT")?;
            decoder.received(&buf[..n]);
            loop {
                match decoder.decode() {
                    Ok(frame) => {
                        let text = frame.display(false).to_string();
                        println!("{text}");
                        if text.contains("kiln: done") {
                            return Ok(());
                        }
                    }
                    Err(DecodeError::UnexpectedEof) => break,
                    Err(DecodeError::Malformed) => {
                        eprintln!("(a malformed defmt frame was skipped)")
                    }
                }
            }
            if n == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Where firmware builds go: `$CARGO_TARGET_DIR/boards`, else kiln's `target/boards`
/// (outside `boards/`, shared by every board crate; `scripts/test.sh` uses the same).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("boards"),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/boards"),
    }
}

/// Builds the firmware in release mode with `KILN_MODEL=model`; returns the ELF.
fn build(firmware: &Path, board: &Board, model: &Path) -> anyhow::Result<PathBuf> {
    let triple = board.target.triple().unwrap_or("thumbv7em-none-eabihf");
    let target_dir = target_dir();
    println!(
        "building {} for {} ({triple}) with {}",
        firmware.display(),
        board.name,
        model.display()
    );
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "--target", triple])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("KILN_MODEL", model)
        .env(kiln_codegen::builder::DIMS_ENV, crate::model::dims_env())
        .current_dir(firmware)
        .output()
        .context("running cargo")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("may not be installed")
            || stderr.contains("can't find crate for `core`")
        {
            format!(" (run `rustup target add {triple}`)")
        } else {
            String::new()
        };
        bail!(
            "building the firmware in {} failed{hint}:\n{stderr}",
            firmware.display()
        );
    }
    let name = package_name(firmware)?;
    Ok(target_dir.join(triple).join("release").join(name))
}

/// The `[package] name` of the firmware's manifest.
fn package_name(firmware: &Path) -> anyhow::Result<String> {
    let manifest = firmware.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    text.lines()
        .find_map(|l| {
            let v = l.trim().strip_prefix("name")?.trim().strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_string())
        })
        .with_context(|| format!("{}: no package name", manifest.display()))
}

/// One allocated section of the ELF.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Section {
    name: String,
    size: u64,
    /// Run-time address.
    vma: u64,
    /// Load address (differs from `vma` for `.data`, copied from flash at reset).
    lma: u64,
    /// Takes room in the image (code or initialized data), not only zeroed RAM.
    loaded: bool,
}

/// The ELF's sections placed in the board's regions.
#[derive(Debug)]
struct MemoryMap {
    board: &'static Board,
    sections: Vec<Section>,
}

impl MemoryMap {
    /// Reads the allocated sections with `llvm-objdump -h`.
    fn read(elf: &Path, board: &'static Board) -> anyhow::Result<MemoryMap> {
        let out = Command::new(llvm_tool("llvm-objdump")?)
            .arg("-h")
            .arg(elf)
            .output()
            .context("running llvm-objdump")?;
        if !out.status.success() {
            bail!(
                "llvm-objdump -h {}: {}",
                elf.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(MemoryMap {
            board,
            sections: parse_objdump(&String::from_utf8_lossy(&out.stdout)),
        })
    }

    /// Flash bytes: everything loaded (by load address).
    fn flash_used(&self) -> u64 {
        self.sections
            .iter()
            .filter(|s| s.loaded)
            .map(|s| s.size)
            .sum()
    }

    /// Static RAM bytes: everything that runs from RAM.
    fn ram_used(&self) -> u64 {
        self.sections
            .iter()
            .filter(|s| self.board.ram.contains(s.vma))
            .map(|s| s.size)
            .sum()
    }

    fn region_of(&self, addr: u64) -> &'static str {
        if self.board.flash.contains(addr) {
            "FLASH"
        } else if self.board.ram.contains(addr) {
            "RAM"
        } else {
            "outside"
        }
    }

    fn render(&self, elf: &Path) -> String {
        let b = self.board;
        let mut s = String::new();
        let _ = writeln!(s, "memory map of {}", elf.display());
        let _ = writeln!(s, "board {b}");
        let _ = writeln!(
            s,
            "{:<16} {:>10} {:>10} {:>10}  region",
            "section", "address", "load", "bytes"
        );
        for sec in &self.sections {
            let mut region = self.region_of(sec.vma).to_string();
            if sec.loaded && sec.lma != sec.vma {
                let _ = write!(region, " (image in {})", self.region_of(sec.lma));
            }
            let _ = writeln!(
                s,
                "{:<16} {:#010x} {:#010x} {:>10}  {region}",
                sec.name, sec.vma, sec.lma, sec.size
            );
        }
        let pct = |used: u64, r: &Region| 100.0 * used as f64 / f64::from(r.bytes).max(1.0);
        let flash = self.flash_used();
        let ram = self.ram_used() + u64::from(b.stack_bytes);
        let _ = writeln!(
            s,
            "FLASH {:#010x}: {flash} of {} bytes used ({:.1}%)",
            b.flash.origin,
            b.flash.bytes,
            pct(flash, &b.flash)
        );
        let _ = writeln!(
            s,
            "RAM   {:#010x}: {ram} of {} bytes used ({:.1}%): {} static + {} stack",
            b.ram.origin,
            b.ram.bytes,
            pct(ram, &b.ram),
            self.ram_used(),
            b.stack_bytes
        );
        s
    }

    /// Fails when a section lies outside the regions or a region overflows, naming
    /// both figures.
    fn check(&self) -> anyhow::Result<()> {
        let b = self.board;
        let flash = self.flash_used();
        if flash > u64::from(b.flash.bytes) {
            bail!(
                "the firmware does not fit {}'s flash: {flash} bytes > {} bytes of flash",
                b.name,
                b.flash.bytes
            );
        }
        let ram = self.ram_used() + u64::from(b.stack_bytes);
        if ram > u64::from(b.ram.bytes) {
            bail!(
                "the firmware does not fit {}'s RAM: {} static + {} stack = {ram} bytes > {} bytes of RAM",
                b.name,
                self.ram_used(),
                b.stack_bytes,
                b.ram.bytes
            );
        }
        for sec in &self.sections {
            for addr in [sec.vma, sec.lma] {
                let inside = |r: &Region| {
                    r.contains(addr) && addr + sec.size <= u64::from(r.origin) + u64::from(r.bytes)
                };
                if sec.size > 0 && !inside(&b.flash) && !inside(&b.ram) {
                    bail!(
                        "section {} ({} bytes at {addr:#010x}) lies outside {}'s flash and RAM",
                        sec.name,
                        sec.size,
                        b.name
                    );
                }
            }
        }
        println!("fits {}", b.name);
        Ok(())
    }
}

/// Allocated sections from `llvm-objdump -h` (`Idx Name Size VMA LMA Type`; sections
/// without a type, such as debug info and `.defmt`, are not loaded).
fn parse_objdump(text: &str) -> Vec<Section> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [_, name, size, vma, lma, kind] = f.as_slice() else {
                return None;
            };
            let hex = |s: &str| u64::from_str_radix(s, 16).ok();
            let loaded = match *kind {
                "TEXT" | "DATA" => true,
                "BSS" => false,
                _ => return None,
            };
            Some(Section {
                name: name.to_string(),
                size: hex(size)?,
                vma: hex(vma)?,
                lma: hex(lma)?,
                loaded,
            })
        })
        .filter(|s| s.size > 0)
        .collect()
}

#[cfg_attr(feature = "probe-rs", allow(dead_code))]
/// Where USB devices are listed (`KILN_USB_SYSFS` overrides it, for tests).
fn usb_sysfs() -> PathBuf {
    std::env::var_os("KILN_USB_SYSFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys/bus/usb/devices"))
}

#[cfg_attr(feature = "probe-rs", allow(dead_code))]
/// Debug probes among the USB devices under `sysfs`, as "NAME (VID:PID)".
fn find_probes(sysfs: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sysfs) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let read = |f: &str| {
            std::fs::read_to_string(e.path().join(f))
                .map(|s| s.trim().to_lowercase())
                .unwrap_or_default()
        };
        let (vid, pid, product) = (read("idVendor"), read("idProduct"), read("product"));
        if let Some(name) = probe_kind(&vid, &pid, &product) {
            found.push(format!("{name} ({vid}:{pid})"));
        }
    }
    found.sort();
    found
}

#[cfg_attr(feature = "probe-rs", allow(dead_code))]
/// The kind of debug probe a USB device is, from its ids and product string.
fn probe_kind(vid: &str, pid: &str, product: &str) -> Option<&'static str> {
    const ST_LINK: [&str; 10] = [
        "3744", "3748", "374a", "374b", "374d", "374e", "374f", "3752", "3753", "3754",
    ];
    match (vid, pid) {
        ("1366", _) => Some("SEGGER J-Link"),
        ("0483", p) if ST_LINK.contains(&p) => Some("ST-Link"),
        ("0d28", "0204") => Some("DAPLink"),
        _ if product.contains("cmsis-dap") => Some("CMSIS-DAP"),
        _ => None,
    }
}

#[cfg_attr(feature = "probe-rs", allow(dead_code))]
/// The program `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJDUMP: &str = "
Sections:
Idx Name            Size     VMA      LMA      Type
  0                 00000000 00000000 00000000 
  1 .vector_table   00000100 00000000 00000000 DATA
  2 .text           00002e10 00000100 00000100 TEXT
  3 .rodata         0000771c 00002f10 00002f10 DATA
  4 .data           00000038 20000000 0000a62c DATA
  5 .gnu.sgstubs    00000000 0000a680 0000a680 DATA
  6 .bss            00003ea4 20000040 20000040 BSS
  7 .uninit         00000400 20003ee4 20003ee4 BSS
  8 .defmt          0000000a 00000000 00000000 
  9 .debug_info     00012ce9 00000000 00000000 
";

    #[test]
    fn memory_map_counts_flash_by_load_address_and_ram_by_run_address() {
        let board = board::find("nrf52840-dk").unwrap();
        let map = MemoryMap {
            board,
            sections: parse_objdump(OBJDUMP),
        };
        let names: Vec<&str> = map.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                ".vector_table",
                ".text",
                ".rodata",
                ".data",
                ".bss",
                ".uninit"
            ]
        );
        assert_eq!(map.flash_used(), 0x100 + 0x2e10 + 0x771c + 0x38);
        assert_eq!(map.ram_used(), 0x38 + 0x3ea4 + 0x400);
        map.check().unwrap();
        let text = map.render(Path::new("fw.elf"));
        assert!(
            text.contains(".data            0x20000000 0x0000a62c"),
            "{text}"
        );
        assert!(text.contains("RAM (image in FLASH)"), "{text}");

        let small = MemoryMap {
            board: board::find("microbit").unwrap(),
            sections: map.sections.clone(),
        };
        let e = small.check().unwrap_err().to_string();
        assert!(e.contains("does not fit microbit's RAM"), "{e}");
        assert!(e.contains("> 16384 bytes of RAM"), "{e}");
    }

    #[test]
    fn probes_are_recognized_by_usb_ids() {
        assert_eq!(probe_kind("1366", "1015", ""), Some("SEGGER J-Link"));
        assert_eq!(probe_kind("0483", "374b", ""), Some("ST-Link"));
        assert_eq!(probe_kind("0483", "5740", "stm32 vcp"), None);
        assert_eq!(
            probe_kind("c251", "f002", "lpc-link cmsis-dap"),
            Some("CMSIS-DAP")
        );
        assert!(find_probes(Path::new("/no/such/sysfs")).is_empty());
    }
}
