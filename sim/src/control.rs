//! `sim/control`: commands a test writes to play the parts of QEMU, the driver and the hardware.
//!
//! Real hosts change under the hook's feet: QEMU opens and closes devices, drivers fail probes or
//! take their time, GPUs fall off the bus. A test triggers each of these by writing one command
//! per line (`hold <uuid>`, `fault create-eio <parent> 2`, `unplug <address>`). This module is
//! the language of those commands only: it turns a write into [`Command`]s, or `EINVAL` for a
//! malformed or unknown one. Carrying them out is the device model's business (it answers
//! `ENOENT` for a device that does not exist), so the model depends on this module and not the
//! other way round.

use crate::kparse::Errno;

/// One parsed control command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `hold <uuid|address>`: a VM opened the device.
    Hold(String),
    /// `release <uuid|address>`: the VM closed it.
    Release(String),
    /// `fault create-eio <parent> [n]`: the next n creates on the parent fail `EIO`.
    CreateEio(String, u32),
    /// `fault create-delay <parent> <ms>`: creates on the parent take this long.
    CreateDelay(String, u64),
    /// `fault remove-eio <uuid>`: the next remove of the device fails `EIO`.
    RemoveEio(String),
    /// `unplug <address>`: the GPU vanishes.
    Unplug(String),
    /// `plug <address>`: it comes back.
    Plug(String),
}

impl Command {
    /// Parses one line; `EINVAL` for anything that is not exactly a known command.
    pub fn parse(line: &str) -> Result<Command, Errno> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |s: &str| s.parse::<u64>().map_err(|_| libc::EINVAL);
        Ok(match words.as_slice() {
            ["hold", t] => Command::Hold(t.to_string()),
            ["release", t] => Command::Release(t.to_string()),
            ["fault", "create-eio", p] => Command::CreateEio(p.to_string(), 1),
            ["fault", "create-eio", p, n] => Command::CreateEio(
                p.to_string(),
                u32::try_from(num(n)?).map_err(|_| libc::EINVAL)?,
            ),
            ["fault", "create-delay", p, ms] => Command::CreateDelay(p.to_string(), num(ms)?),
            ["fault", "remove-eio", u] => Command::RemoveEio(u.to_string()),
            ["unplug", a] => Command::Unplug(a.to_string()),
            ["plug", a] => Command::Plug(a.to_string()),
            _ => return Err(libc::EINVAL),
        })
    }
}

/// Parses a whole write to `sim/control`: every non-blank line must be a command, and there
/// must be at least one; otherwise the write fails `EINVAL` before anything is carried out.
pub fn parse_write(data: &[u8]) -> Result<Vec<Command>, Errno> {
    let text = std::str::from_utf8(data).map_err(|_| libc::EINVAL)?;
    let commands = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(Command::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if commands.is_empty() {
        return Err(libc::EINVAL);
    }
    Ok(commands)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_command() {
        assert_eq!(
            Command::parse("hold 0000:41:00.4"),
            Ok(Command::Hold("0000:41:00.4".into()))
        );
        assert_eq!(
            Command::parse("fault create-eio mtty 3"),
            Ok(Command::CreateEio("mtty".into(), 3))
        );
        assert_eq!(
            Command::parse("fault create-eio mtty"),
            Ok(Command::CreateEio("mtty".into(), 1))
        );
        assert_eq!(
            Command::parse("fault create-delay mtty 250"),
            Ok(Command::CreateDelay("mtty".into(), 250))
        );
        assert_eq!(
            Command::parse("plug 0000:82:00.0"),
            Ok(Command::Plug("0000:82:00.0".into()))
        );
    }

    #[test]
    fn unknown_or_malformed_commands_are_einval() {
        for bad in [
            "",
            "hold",
            "hold a b",
            "frobnicate x",
            "fault create-delay mtty",
            "fault create-delay mtty soon",
        ] {
            assert_eq!(Command::parse(bad), Err(libc::EINVAL), "{bad:?}");
        }
    }
}
