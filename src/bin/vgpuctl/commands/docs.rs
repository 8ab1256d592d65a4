//! `completions` and `man`: generated from the clap definition, so they never drift from the
//! real options.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

use super::emit;
use crate::cli::Cli;
use crate::error::CtlError;

/// `vgpuctl completions SHELL`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> Result<ExitCode, CtlError> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "vgpuctl", out);
    emit(out.flush())?;
    Ok(ExitCode::SUCCESS)
}

/// `vgpuctl man [--dir DIR]`.
pub fn man(dir: Option<&Path>, out: &mut dyn Write) -> Result<ExitCode, CtlError> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| CtlError::io(dir.display(), e))?;
            clap_mangen::generate_to(Cli::command(), dir)
                .map_err(|e| CtlError::io(dir.display(), e))?;
            emit(writeln!(out, "wrote man pages to {}", dir.display()))?;
        }
        None => emit(clap_mangen::Man::new(Cli::command()).render(out))?,
    }
    Ok(ExitCode::SUCCESS)
}
