#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        tessera::fuzzing::self_check().expect("the fuzz targets' runtime and verifier");
    },
    |data: &[u8]| tessera::fuzzing::settings(data)
);
