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

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match commands::run(&cli, &vgpu_hook::host::Host::from_env(), &mut out) {
        Ok(code) => code,
        Err(e) if e.message.is_empty() => ExitCode::from(e.exit as u8),
        Err(e) => {
            eprintln!("vgpuctl: {e}");
            ExitCode::from(e.exit as u8)
        }
    }
}
