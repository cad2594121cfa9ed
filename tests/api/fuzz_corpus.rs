//! The fuzz targets' seeds (fuzz/seeds, from the tests' inputs) and every crash a campaign
//! has found (fuzz/regressions), replayed under stable cargo through the same entries the
//! fuzz targets call: none may panic.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn files(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn every_seed_and_every_crash_found_replays_without_a_panic() {
    tessera::fuzzing::self_check().unwrap();
    let root = Path::new(ROOT).join("fuzz");
    for (name, target) in tessera::fuzzing::TARGETS {
        assert!(
            root.join("fuzz_targets")
                .join(format!("{name}.rs"))
                .exists(),
            "{name} has no fuzz target"
        );
        let seeds = files(&root.join("seeds").join(name));
        assert!(seeds.len() >= 5, "{name}: seeds missing");
        for file in seeds
            .iter()
            .chain(&files(&root.join("regressions").join(name)))
        {
            let input = std::fs::read(file).unwrap();
            // A panic fails this test, naming the input through the backtrace's frame.
            eprintln!("{name}: {}", file.display());
            target(&input);
        }
    }
}

#[test]
fn the_seed_tokens_reach_past_the_signature() {
    let seeds = Path::new(ROOT).join("fuzz/seeds/authorization");
    let read = |name: &str| std::fs::read(seeds.join(name)).unwrap();
    assert!(tessera::fuzzing::authenticates(&read("dev-token")));
    assert!(tessera::fuzzing::authenticates(&read("hs256")));
    assert!(!tessera::fuzzing::authenticates(&read("crit")));
    assert!(!tessera::fuzzing::authenticates(&read("alg-none")));
}
