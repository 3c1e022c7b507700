//! Helpers the integration tests share: the repository root and its datasets.
#![allow(dead_code)] // Each test crate uses a different part.

use kiln_train::data::Dataset;
use kiln_train::model::ModelSpec;
use std::path::Path;

/// The repository root (models/, data/).
pub fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The first `limit` MNIST digits: the official test set, or the training set.
pub fn mnist(limit: usize, test: bool) -> Dataset {
    let dir = if test {
        "data/mnist-test"
    } else {
        "data/mnist-10k"
    };
    Dataset::load_dir(&root().join(dir), &[28, 28, 1], Some(limit)).unwrap()
}

/// A model file of models/lenet.
pub fn lenet_spec(file: &str) -> ModelSpec {
    ModelSpec::load(&root().join("models/lenet").join(file)).unwrap()
}
