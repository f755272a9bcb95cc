//! The fuzz targets' bodies (`tests/fuzzing`), with their oracles, over the corpus kept
//! in `fuzz/corpus` and over seeded random inputs: what libFuzzer found once stays a
//! test, and the oracles run in every `cargo test`.

use carapace::prng::Prng;
use carapace_fuzzing::TARGETS;

/// Seeded inputs per target: enough to reach every decoder's error paths.
const SEEDED_INPUTS: u64 = 64;

#[test]
fn every_fuzz_target_holds_over_its_corpus_and_seeded_inputs() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fuzz")
        .join("corpus");
    for (name, target) in TARGETS {
        let mut corpus_inputs = 0;
        for entry in std::fs::read_dir(corpus.join(name)).unwrap() {
            target(&std::fs::read(entry.unwrap().path()).unwrap());
            corpus_inputs += 1;
        }
        // The kept corpus is what makes this test reach past the decoders' first checks.
        assert!(corpus_inputs > 0, "`fuzz/corpus/{name}` is empty");
        let mut prng = Prng::new(0xf022);
        for _ in 0..SEEDED_INPUTS {
            let mut input = vec![0; prng.below(2048) as usize];
            prng.fill(&mut input);
            target(&input);
        }
    }
}
