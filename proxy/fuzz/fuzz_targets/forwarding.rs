//! Any incoming forwarding header bytes: setting the forwarding headers
//! never panics, and the client's address is always the last hop.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use switchyard_proxy::headers::add_forwarding;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let client = std::net::IpAddr::from([192, 0, 2, 1]);
    for trusted in [false, true] {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.clone());
        headers.insert("forwarded", value.clone());
        add_forwarding(&mut headers, client, "http", true, trusted);
        let xff = headers["x-forwarded-for"].to_str().unwrap_or("");
        assert!(xff.ends_with("192.0.2.1"), "{xff}");
        if !trusted {
            assert_eq!(xff, "192.0.2.1");
        }
    }
});
