//! nRF52840-DK: runs the model compiled by build.rs (`KILN_MODEL`) and logs each
//! inference's top class and cycle count over defmt-rtt (`kiln flash --board nrf52840-dk`).
#![no_std]
#![no_main]

use defmt_rtt as _;
use nrf52840_hal::{clocks::Clocks, pac};
use panic_probe as _;

// The generated module also exports shapes and quantization constants this firmware
// does not use.
#[allow(dead_code)]
mod model {
    include!(concat!(env!("OUT_DIR"), "/model.rs"));
}
mod sample {
    include!(concat!(env!("OUT_DIR"), "/sample.rs"));
}

#[cortex_m_rt::entry]
fn main() -> ! {
    let (Some(p), Some(core)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        defmt::panic!("peripherals taken twice");
    };
    // 64 MHz from the external crystal (the core clock is fixed at 64 MHz).
    let _clocks = Clocks::new(p.CLOCK).enable_ext_hfosc();
    let Some(arena) = cortex_m::singleton!(: model::Arena = model::Arena::new()) else {
        defmt::panic!("arena taken twice");
    };
    let mut input = [0i8; model::INPUT_LEN];
    kiln_board::fill(&mut input, &sample::INPUT);
    kiln_board::run_forever(core, sample::MODEL, &input, sample::EXPECTED, |x, y| {
        model::run(arena, x, y)
    })
}
