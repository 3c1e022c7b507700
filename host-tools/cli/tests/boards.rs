//! `kiln compile --board` fit checks and `kiln flash` without hardware: `--dry-run`
//! builds the real firmware and prints its memory map; a flash with no probe attached
//! fails after the build with "no debug probe found".

mod common;

use common::{kiln_with_env as kiln, temp_dir, text};
use std::path::Path;

const KWS: &str = "models/kws_ref_model/model.tflite";

#[test]
fn compile_for_a_board_too_small_names_both_figures() {
    let out = temp_dir("small");
    let o = kiln(
        &[
            "compile",
            KWS,
            "--board",
            "microbit",
            // With in-place convs KWS (9,536-byte arena, DSP scratch included) fits the micro:bit's 16 KiB.
            "--no-in-place-conv",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("does not fit microbit's RAM"), "{t}");
    assert!(t.contains("arena 16000 + stack 2048"), "{t}");
    assert!(t.contains("bytes > 16384 bytes of RAM"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
}

#[test]
fn compile_for_a_board_reports_how_full_it_is_and_implies_the_target() {
    let out = temp_dir("fits");
    let dir = out.to_str().unwrap();
    let o = kiln(
        &["compile", KWS, "--board", "nrf52840-dk", "--out", dir],
        &[],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("thumbv7em-none-eabihf"),
        "--board implies cortex-m4: {t}"
    );
    // RAM: the arena, the probe's static data and the 16 KiB stack.
    assert!(
        t.contains("board:          nrf52840-dk (nRF52840_xxAA): RAM ")
            && t.contains(" of 262144 bytes (arena + 16384 stack), flash "),
        "{t}"
    );
    let o = kiln(
        &[
            "compile",
            KWS,
            "--board",
            "nrf52840-dk",
            "--target",
            "cortex-m7",
            "--out",
            dir,
        ],
        &[],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("--board nrf52840-dk is a cortex-m4, not --target cortex-m7"),
        "{t}"
    );
    let o = kiln(&["compile", KWS, "--board", "uno", "--out", dir], &[]);
    assert!(text(&o).contains("unknown board 'uno'"), "{}", text(&o));
}

#[test]
fn flash_dry_run_builds_the_firmware_and_prints_its_memory_map() {
    for (board, flash) in [
        ("nrf52840-dk", "FLASH 0x00000000"),
        ("nucleo-f767zi", "FLASH 0x08000000"),
    ] {
        let o = kiln(&["flash", KWS, "--board", board, "--dry-run"], &[]);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        for needle in [
            ".vector_table",
            ".text",
            ".rodata",
            ".bss",
            flash,
            "RAM   0x20000000",
        ] {
            assert!(t.contains(needle), "{board}: no {needle}: {t}");
        }
        assert!(t.contains(&format!("fits {board}")), "{t}");
    }
}

#[test]
fn flash_without_a_probe_fails_after_the_build() {
    let empty = temp_dir("no-usb");
    let o = kiln(
        &["flash", KWS, "--board", "nrf52840-dk"],
        &[("KILN_USB_SYSFS", empty.to_str().unwrap())],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("fits nrf52840-dk"),
        "the build and check come first: {t}"
    );
    assert!(t.contains("error: no debug probe found"), "{t}");

    // A J-Link on USB but no probe-rs on PATH: say how to get it.
    let usb = temp_dir("jlink");
    let dev = usb.join("1-1");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("idVendor"), "1366\n").unwrap();
    std::fs::write(dev.join("idProduct"), "1015\n").unwrap();
    let cargo_bin = Path::new(&std::env::var("CARGO").unwrap_or_default())
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let o = kiln(
        &["flash", KWS, "--board", "nrf52840-dk"],
        &[
            ("KILN_USB_SYSFS", usb.to_str().unwrap()),
            ("PATH", &cargo_bin),
        ],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("found SEGGER J-Link (1366:1015)"), "{t}");
    assert!(t.contains("cargo install probe-rs-tools --locked"), "{t}");
}

#[test]
fn flash_refuses_qemu_machines_and_boards_without_firmware() {
    let o = kiln(&["flash", KWS, "--board", "mps2-an386", "--dry-run"], &[]);
    assert!(text(&o).contains("is a QEMU machine"), "{}", text(&o));
    let o = kiln(&["flash", KWS, "--board", "microbit", "--dry-run"], &[]);
    assert!(
        text(&o).contains("no firmware crate for microbit"),
        "{}",
        text(&o)
    );
    assert_eq!(o.status.code(), Some(1));
}
