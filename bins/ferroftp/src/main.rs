//! `ferroftp`: the FTP server and its tools in one binary.

// Nothing in a binary is reachable from outside it: `pub` here only means "used by another
// module", so the workspace's `unreachable_pub` has nothing to say.
#![allow(unreachable_pub)]

mod cli;
mod logging;
mod open_files;
mod privileges;
mod serve;
mod systemd;
mod user_command;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ferroftp: {error:#}");
            ExitCode::FAILURE
        }
    }
}
