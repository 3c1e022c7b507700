//! NUCLEO-F767ZI (STM32F767, Cortex-M7): runs the model compiled by build.rs
//! (`KILN_MODEL`) and logs each inference's top class and cycle count over defmt-rtt
//! (`kiln flash --board nucleo-f767zi`).
#![no_std]
#![no_main]

use defmt_rtt as _;
use panic_probe as _;
use stm32f7xx_hal::{pac, prelude::*};

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
    let (Some(p), Some(mut core)) = (pac::Peripherals::take(), cortex_m::Peripherals::take())
    else {
        defmt::panic!("peripherals taken twice");
    };
    // 216 MHz from the internal oscillator through the PLL, with both caches on.
    core.SCB.enable_icache();
    core.SCB.enable_dcache(&mut core.CPUID);
    let _clocks = p.RCC.constrain().cfgr.sysclk(216.MHz()).freeze();
    let Some(arena) = cortex_m::singleton!(: model::Arena = model::Arena::new()) else {
        defmt::panic!("arena taken twice");
    };
    let mut input = [0i8; model::INPUT_LEN];
    kiln_board::fill(&mut input, &sample::INPUT);
    kiln_board::run_forever(core, sample::MODEL, &input, sample::EXPECTED, |x, y| {
        model::run(arena, x, y)
    })
}
