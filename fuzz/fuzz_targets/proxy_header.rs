//! The PROXY protocol (v1 and v2) header reader and parser: any first bytes of a connection
//! from a trusted proxy give an address, no address (LOCAL/UNKNOWN) or an error; no panic,
//! and a v1 header is never read past its line feed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ferroftp_server::read_header_from_bytes(data);
});
