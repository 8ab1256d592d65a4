//! One function per subcommand, gluing the command line, libvirt and the library together. Each
//! writes its result to the writer it is given (stdout in the program, a buffer in tests) and
//! remarks to stderr, so `--xml` and `--json` output stays machine-readable.

mod admin;
mod docs;
mod drain;
mod edit;
mod guest;
mod host_side;
mod migrate;
mod show;

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use vgpu_hook::host::Host;
use vgpu_hook::model::config::Config;

use crate::cli::{Cli, Command};
use crate::error::CtlError;

/// Runs the parsed command line on `host` (the real one, or a test's).
pub fn run(cli: &Cli, host: &Host, out: &mut dyn Write) -> Result<ExitCode, CtlError> {
    let host = host.clone();
    match &cli.command {
        Command::Attach(a) => edit::attach(&cli.connect, &host, a, out),
        Command::Detach(a) => edit::detach(&cli.connect, &host, a, out),
        Command::Types(a) => show::types(&host, a, out),
        Command::List(a) => show::list(&host, a.json, out),
        Command::Status(a) => show::status(&cli.connect, &host, a, out),
        Command::MigrateCheck(a) => migrate::check(&cli.connect, &host, a, out),
        Command::Resync(a) => migrate::resync(&cli.connect, &host, a, out),
        Command::Guest(a) => guest::guest(&cli.connect, &host, a, out),
        Command::Reconcile(a) => admin::reconcile(&host, a.dry_run, out),
        Command::Install(a) => admin::install(&host, a, out),
        Command::Uninstall(a) => admin::uninstall(&host, a, out),
        Command::Doctor(a) => admin::doctor(&cli.connect, &host, a, out),
        Command::Boot(a) => host_side::boot(&host, a, out),
        Command::Metrics(a) => host_side::metrics(&host, a, out),
        Command::Drain(a) => drain::drain(&host, a, out),
        Command::Undrain(a) => drain::undrain(&host, a, out),
        Command::Completions { shell } => docs::completions(*shell, out),
        Command::Man { dir } => docs::man(dir.as_deref(), out),
    }
}

/// Maps a failed write to stdout: a closed pipe (`vgpuctl list | head`) ends quietly.
pub fn emit(r: io::Result<()>) -> Result<(), CtlError> {
    r.map_err(CtlError::output)
}

/// A remark for the operator, on stderr.
pub fn note(message: &str) {
    eprintln!("note: {message}");
}

/// Reads a domain XML file, or stdin for `-`.
pub fn read_xml(path: &Path) -> Result<String, CtlError> {
    let mut text = String::new();
    let r = if path == Path::new("-") {
        io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text).map(|_| ()))
    };
    r.map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            CtlError::NotFound(format!("{}: no such file", path.display()))
        } else {
            CtlError::io(path.display(), e)
        }
    })?;
    Ok(text)
}

/// The config, or why it cannot be had.
pub fn load_config(host: &Host) -> Result<Config, CtlError> {
    Ok(Config::load(&host.config_path)?)
}
