//! `meridian`: one binary for every node and every operator tool.
//!
//! This file only wires the command line to the crates; each subcommand lives in its own
//! module under `cli/`. Exit codes are a contract: 0 success, 1 runtime failure, 2 bad
//! usage or invalid configuration.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(args.log_level.as_deref());
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = cli::exit_code(&err);
            eprintln!("error: {}", cli::one_sentence(&err));
            ExitCode::from(code)
        }
    }
}
