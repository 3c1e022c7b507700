//! Compiles the model (`KILN_MODEL`, default: the shipped keyword spotter) into
//! OUT_DIR and writes this board's memory.x from kiln's board table.
fn main() {
    kiln_board::build::generate("nrf52840-dk");
}
