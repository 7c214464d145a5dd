//! Any path: normalising never panics, keeps the leading slash, and is
//! idempotent in every encoded-slash mode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_config::path::{EncodedSlashes, normalize};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    for mode in [EncodedSlashes::Reject, EncodedSlashes::Keep, EncodedSlashes::Decode] {
        if let Ok(once) = normalize(path, mode) {
            if path.starts_with('/') {
                assert!(once.starts_with('/'));
            }
            let twice = normalize(&once, mode).expect("a normalised path normalises");
            assert_eq!(twice, once);
        }
    }
});
