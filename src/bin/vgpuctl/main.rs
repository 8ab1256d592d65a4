//! `vgpuctl`: the operator's command line for vgpu-hook. Parses the arguments, runs one command
//! (see `commands`), prints failures as one `vgpuctl: ...` line and exits with the documented
//! status. Everything that uses libvirt lives in `libvirt`; everything else is in the library.

mod cli;
mod commands;
mod error;
mod libvirt;
#[cfg(test)]
mod tests;

use std::process::ExitCode;

use clap::Parser;

use crate::error::CtlError;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    let stdout = std::io::stdout();
    match commands::run(&cli, &host(), &mut stdout.lock()) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// The host from the environment, whose state lock is waited for as long as the config says
/// (the default when it cannot be read: the command reports that itself where it matters).
fn host() -> vgpu_hook::host::Host {
    let host = vgpu_hook::host::Host::from_env();
    match vgpu_hook::model::config::Config::load(&host.config_path) {
        Ok(c) => host.with_lock_wait(c.timing.lock_wait),
        Err(_) => host,
    }
}

/// Diagnostics on stderr: warnings by default, more with each `-v`, or as `RUST_LOG` says.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
}

/// Prints the error as one line (a closed stdout is not worth one) and gives its exit status.
fn fail(e: &CtlError) -> ExitCode {
    if !matches!(e, CtlError::BrokenPipe) {
        eprintln!("vgpuctl: {e}");
    }
    ExitCode::from(e.exit() as u8)
}
