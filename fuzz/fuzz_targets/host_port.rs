//! PORT/EPRT arguments and PASV/EPSV replies: parsing never panics, and whatever parses
//! formats back into text that parses to the same address (a round trip).
#![no_main]

use ferroftp_proto::host_port::{
    format_eprt_argument, format_epsv_text, format_pasv_text, format_port_argument,
    parse_eprt_argument, parse_epsv_reply, parse_pasv_reply, parse_port_argument,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(address) = parse_port_argument(text) {
        assert_eq!(parse_port_argument(&format_port_argument(address)), Ok(address));
    }
    if let Ok(address) = parse_eprt_argument(text) {
        assert_eq!(parse_eprt_argument(&format_eprt_argument(address)), Ok(address));
    }
    if let Ok(address) = parse_pasv_reply(text) {
        assert_eq!(parse_pasv_reply(&format_pasv_text(address)), Ok(address));
    }
    if let Ok(port) = parse_epsv_reply(text) {
        assert_eq!(parse_epsv_reply(&format_epsv_text(port)), Ok(port));
    }
});
