//! Truncated and bit-flipped copies of the shipped models go through the importer and
//! the executor: every one must end in a result or an error, never a panic.

use kiln_codegen::fuzzing::import_and_run;
use kiln_tests::models_dir;

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn model(rel: &str) -> Vec<u8> {
    std::fs::read(models_dir().join(rel).join("model.tflite")).expect("shipped model")
}

/// Runs `import_and_run` on `bytes`, turning a panic into a described failure.
fn survives(bytes: &[u8], what: &str, failures: &mut Vec<String>) -> bool {
    match std::panic::catch_unwind(|| import_and_run(bytes)) {
        Ok(r) => r.is_ok(),
        Err(_) => {
            failures.push(what.to_string());
            false
        }
    }
}

const MODELS: [&str; 4] = [
    "kws_ref_model",
    "pretrainedResnet_quant",
    "ops/concatenation_i8_axis1_1x2x4x3_1x3x4x3_1x1x4x3",
    "ops/mean_i8_1x6x6x8_axes12_nokeepdims_requant",
];

#[test]
fn shipped_models_import_and_run() {
    for rel in MODELS {
        assert_eq!(import_and_run(&model(rel)), Ok(()), "{rel}");
    }
}

#[test]
fn truncated_models_give_errors() {
    let mut failures = Vec::new();
    for rel in MODELS {
        let bytes = model(rel);
        let cuts = (0..64).chain((0..bytes.len()).step_by(bytes.len() / 97 + 1));
        for cut in cuts.filter(|&c| c < bytes.len()) {
            let imported = survives(&bytes[..cut], &format!("{rel} cut at {cut}"), &mut failures);
            // A prefix of a flatbuffer cannot hold all the offsets the whole one needs.
            assert!(
                !imported || cut > bytes.len() / 2,
                "{rel}: a {cut}-byte prefix imported"
            );
        }
    }
    assert!(failures.is_empty(), "panics: {failures:?}");
}

#[test]
fn bit_flipped_models_never_panic() {
    let mut failures = Vec::new();
    let mut rng = Rng(0x6b69_6c6e);
    let mut outcomes = [0usize; 2];
    for rel in MODELS {
        let original = model(rel);
        for trial in 0..150 {
            let mut bytes = original.clone();
            // Flips land mostly in the first 2 KiB, where the flatbuffer's tables and
            // offsets live, and sometimes anywhere.
            for _ in 0..1 + rng.below(4) {
                let limit = if rng.below(4) == 0 {
                    bytes.len()
                } else {
                    bytes.len().min(2048)
                };
                let at = rng.below(limit);
                bytes[at] ^= 1 << rng.below(8);
            }
            let ok = survives(&bytes, &format!("{rel} trial {trial}"), &mut failures);
            outcomes[usize::from(ok)] += 1;
        }
    }
    assert!(failures.is_empty(), "panics: {failures:?}");
    // Both outcomes occur: the flips reach structure, not only weights.
    assert!(
        outcomes[0] > 0 && outcomes[1] > 0,
        "errors/successes: {outcomes:?}"
    );
}
