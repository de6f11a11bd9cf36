//! The config file: any text goes through what `check-config` and `serve` do with a file
//! before they look outside it (every parse-level problem recovered from, then the rules
//! that span fields) and, when that finds nothing wrong, into the server's options. No
//! panic; a config without problems converts; every problem names its field.
//!
//! The last step of the report (certificate files, the users file, `server.user`, DNS names)
//! reads the machine, not the text, and is left out.
#![no_main]

use ferroftp_config::report::parse_reporting_all;
use ferroftp_config::FirewallSummary;
use ferroftp_server::ServerOptions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (config, mut problems) = parse_reporting_all(text);
    let Some(config) = config else {
        assert!(!problems.is_empty(), "no config and no problem for {text:?}");
        return;
    };
    problems.extend(config.validate());
    for problem in &problems {
        assert!(!problem.field.is_empty() && !problem.message.is_empty());
    }
    let _ = FirewallSummary::of_config(&config).to_string();
    if problems.is_empty() {
        let options = ServerOptions::from(&config);
        assert_eq!(options.listeners.len(), config.server.listeners.len());
        assert_eq!(options.passive_ports, config.passive.ports.ports());
        assert!(options.passive_ports.start() <= options.passive_ports.end());
    }
});
