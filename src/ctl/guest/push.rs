//! Handing a guest its licence: a client configuration token (NLS) or a legacy licence server,
//! written where the guest's OS expects it, then the licensing service restarted.
//!
//! A failed write must leave the guest's previous files in place, so every file is first
//! written whole under a temporary name next to its destination (a name the licensing service
//! ignores), and only then are the files it replaces moved aside as `NAME.bak-STAMP` and the
//! new one renamed into place, in one short script run by the agent. Windows' legacy server
//! settings live in the registry; the key is exported to a `.reg` file before it is changed.

use std::time::{Duration, Instant};

use super::agent::{self, Agent, Os};
use super::license::{edit_gridd_conf, Server};
use super::probe::{self, ps_quote, script, HELPER_BUDGET, LINUX_SERVICE, WINDOWS_SERVICE};
use super::report::GuestRow;
use super::GuestError;

const LINUX_TOKEN_DIR: &str = "/etc/nvidia/ClientConfigToken";
const LINUX_GRIDD_CONF: &str = "/etc/nvidia/gridd.conf";
const WINDOWS_LICENSING_DIR: &str = r"C:\Program Files\NVIDIA Corporation\vGPU Licensing";
const WINDOWS_GRID_KEY: &str = r"HKLM\SOFTWARE\NVIDIA Corporation\Global\GridLicensing";

/// What to give the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Licence {
    /// An NLS client configuration token (already checked), under this file name.
    Token {
        /// File name in the token directory (ends in `.tok`).
        name: String,
        /// The token text.
        token: String,
    },
    /// A legacy licence server (already checked reachable) and feature type.
    Server {
        /// Where.
        server: Server,
        /// `FeatureType`.
        feature_type: u32,
    },
}

/// The name a token is stored under: the operator's file name when it is a plain `*.tok` name,
/// else `client_configuration_token.tok`.
pub fn token_name(file_name: &str) -> String {
    let plain = file_name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain && file_name.ends_with(".tok") && !file_name.starts_with('.') && file_name.len() <= 128
    {
        file_name.to_string()
    } else {
        "client_configuration_token.tok".to_string()
    }
}

/// One file to put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    /// Directory (created when missing).
    pub dir: String,
    /// Destination.
    pub path: String,
    /// Where it is written first.
    pub temp: String,
    /// Its content.
    pub content: String,
    /// What the move replaces and backs up (for the dry run).
    pub replaces: String,
}

/// Everything a push does, decided before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The guest's OS.
    pub os: Os,
    /// The file to write, if any.
    pub file: Option<FileWrite>,
    /// Windows' legacy server: the PowerShell script that backs up and sets the registry key.
    pub registry: Option<String>,
    /// Backup suffix stamp.
    pub stamp: String,
}

/// Plans the push; reads the guest's current `gridd.conf` (or its template) for a server.
pub fn plan(agent: &dyn Agent, os: Os, licence: &Licence, stamp: &str) -> Result<Plan, GuestError> {
    let mut plan = Plan {
        os,
        file: None,
        registry: None,
        stamp: stamp.to_string(),
    };
    match (os, licence) {
        (Os::Linux, Licence::Token { name, token }) => {
            plan.file = Some(FileWrite {
                dir: LINUX_TOKEN_DIR.into(),
                path: format!("{LINUX_TOKEN_DIR}/{name}"),
                temp: format!("{LINUX_TOKEN_DIR}/.vgpuctl-{stamp}.tmp"),
                content: format!("{token}\n"),
                replaces: format!("every {LINUX_TOKEN_DIR}/*.tok, moved to *.tok.bak-{stamp}"),
            });
        }
        (Os::Windows, Licence::Token { name, token }) => {
            let dir = format!(r"{WINDOWS_LICENSING_DIR}\ClientConfigToken");
            plan.file = Some(FileWrite {
                path: format!(r"{dir}\{name}"),
                temp: format!(r"{dir}\.vgpuctl-{stamp}.tmp"),
                content: format!("{token}\r\n"),
                replaces: format!(r"every {dir}\*.tok, moved to *.tok.bak-{stamp}"),
                dir,
            });
        }
        (
            Os::Linux,
            Licence::Server {
                server,
                feature_type,
            },
        ) => {
            let old = match agent::read_file(agent, LINUX_GRIDD_CONF)? {
                Some(b) => b,
                None => agent::read_file(agent, &format!("{LINUX_GRIDD_CONF}.template"))?
                    .unwrap_or_default(),
            };
            plan.file = Some(FileWrite {
                dir: "/etc/nvidia".into(),
                path: LINUX_GRIDD_CONF.into(),
                temp: format!("/etc/nvidia/.gridd.conf.vgpuctl-{stamp}.tmp"),
                content: edit_gridd_conf(&String::from_utf8_lossy(&old), server, *feature_type),
                replaces: format!("{LINUX_GRIDD_CONF}, copied to gridd.conf.bak-{stamp} first"),
            });
        }
        (
            Os::Windows,
            Licence::Server {
                server,
                feature_type,
            },
        ) => {
            plan.registry = Some(registry_script(server, *feature_type, stamp));
        }
    }
    Ok(plan)
}

fn registry_script(server: &Server, feature_type: u32, stamp: &str) -> String {
    let key = format!("Registry::{WINDOWS_GRID_KEY}");
    let backup = format!(r"{WINDOWS_LICENSING_DIR}\GridLicensing.bak-{stamp}.reg");
    format!(
        "$ErrorActionPreference = 'Stop'; $k = {key}; if (Test-Path $k) {{ & reg.exe export {reg} {backup} /y | Out-Null; {backup} }}; New-Item -Path $k -Force | Out-Null; New-ItemProperty -Path $k -Name ServerAddress -PropertyType String -Value {host} -Force | Out-Null; New-ItemProperty -Path $k -Name ServerPort -PropertyType String -Value {port} -Force | Out-Null; New-ItemProperty -Path $k -Name FeatureType -PropertyType DWord -Value {feature_type} -Force | Out-Null",
        key = ps_quote(&key),
        reg = ps_quote(WINDOWS_GRID_KEY),
        backup = ps_quote(&backup),
        host = ps_quote(&server.host),
        port = ps_quote(&server.port.to_string()),
    )
}

impl Plan {
    /// What the push would do, one line each (`--dry-run`).
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(f) = &self.file {
            out.push(format!(
                "write {} bytes to {} (via {}), replacing {}:",
                f.content.len(),
                f.path,
                f.temp,
                f.replaces
            ));
            // A token is a credential: its size says enough; a config is shown whole.
            if !f.path.ends_with(".tok") {
                out.extend(f.content.lines().map(|l| format!("    {l}")));
            }
        }
        if let Some(r) = &self.registry {
            out.push(format!(
                "set {WINDOWS_GRID_KEY} (exported first) with PowerShell: {r}"
            ));
        }
        out.push(format!("restart {}", self.service()));
        out
    }

    fn service(&self) -> &'static str {
        match self.os {
            Os::Linux => LINUX_SERVICE,
            Os::Windows => WINDOWS_SERVICE,
        }
    }

    /// Writes, moves into place, restarts the service. Returns one line per thing done (the
    /// backups made among them). A failure before the move leaves the guest's files as they
    /// were (the temporary file is removed).
    pub fn apply(&self, agent: &dyn Agent) -> Result<Vec<String>, GuestError> {
        let mut done = Vec::new();
        if let Some(f) = &self.file {
            self.put_file(agent, f, &mut done)?;
        }
        if let Some(r) = &self.registry {
            let out = script(agent, self.os, r, &[], HELPER_BUDGET)?;
            check(&out, "setting the licence server in the registry")?;
            done.extend(
                out.stdout
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| format!("backup: {}", l.trim())),
            );
            done.push(format!("set {WINDOWS_GRID_KEY}"));
        }
        let out = match self.os {
            Os::Linux => script(
                agent,
                self.os,
                RESTART_LINUX,
                &[LINUX_SERVICE],
                HELPER_BUDGET,
            )?,
            Os::Windows => script(
                agent,
                self.os,
                &format!("Restart-Service -Name {} -Force", ps_quote(WINDOWS_SERVICE)),
                &[],
                HELPER_BUDGET,
            )?,
        };
        check(&out, &format!("restarting {}", self.service()))?;
        done.push(format!("restarted {}", self.service()));
        Ok(done)
    }

    fn put_file(
        &self,
        agent: &dyn Agent,
        f: &FileWrite,
        done: &mut Vec<String>,
    ) -> Result<(), GuestError> {
        let mkdir = match self.os {
            Os::Linux => script(agent, self.os, "mkdir -p \"$1\"", &[&f.dir], HELPER_BUDGET)?,
            Os::Windows => script(
                agent,
                self.os,
                &format!(
                    "New-Item -ItemType Directory -Force -Path {} | Out-Null",
                    ps_quote(&f.dir)
                ),
                &[],
                HELPER_BUDGET,
            )?,
        };
        check(&mkdir, &format!("creating {}", f.dir))?;
        if let Err(e) = agent::write_file(agent, &f.temp, f.content.as_bytes()) {
            self.remove_temp(agent, f);
            return Err(e);
        }
        let out = match (self.os, f.path.ends_with(".tok")) {
            (Os::Linux, true) => script(
                agent,
                self.os,
                INSTALL_TOKEN_LINUX,
                &[&f.dir, &f.temp, &f.path, &self.stamp],
                HELPER_BUDGET,
            ),
            (Os::Linux, false) => script(
                agent,
                self.os,
                INSTALL_CONF_LINUX,
                &[&f.path, &f.temp, &self.stamp],
                HELPER_BUDGET,
            ),
            (Os::Windows, _) => script(
                agent,
                self.os,
                &install_token_windows(f, &self.stamp),
                &[],
                HELPER_BUDGET,
            ),
        };
        let out = match out
            .and_then(|o| check(&o, &format!("moving {} into place", f.path)).map(|()| o))
        {
            Ok(o) => o,
            Err(e) => {
                self.remove_temp(agent, f);
                return Err(e);
            }
        };
        done.extend(
            out.stdout
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| format!("backup: {}", l.trim())),
        );
        done.push(format!("wrote {}", f.path));
        Ok(())
    }

    fn remove_temp(&self, agent: &dyn Agent, f: &FileWrite) {
        let _ = match self.os {
            Os::Linux => script(agent, self.os, "rm -f \"$1\"", &[&f.temp], HELPER_BUDGET),
            Os::Windows => script(
                agent,
                self.os,
                &format!(
                    "Remove-Item -Force -LiteralPath {} -ErrorAction SilentlyContinue",
                    ps_quote(&f.temp)
                ),
                &[],
                HELPER_BUDGET,
            ),
        };
    }
}

/// Backs up every token (`$1/*.tok`), then renames the new one (`$2`) to `$3`; `$4` is the stamp.
const INSTALL_TOKEN_LINUX: &str = r#"set -e
for f in "$1"/*.tok; do
  [ -e "$f" ] || continue
  mv -f "$f" "$f.bak-$4"
  echo "$f.bak-$4"
done
mv -f "$2" "$3"
chmod 0744 "$3""#;

/// Copies the old config (`$1`) aside when there is one, then renames the new one (`$2`) onto it.
const INSTALL_CONF_LINUX: &str = r#"set -e
if [ -e "$1" ]; then cp -p "$1" "$1.bak-$3"; echo "$1.bak-$3"; fi
mv -f "$2" "$1""#;

/// systemd when it runs, else SysV `service`, else the init script.
const RESTART_LINUX: &str = r#"if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then systemctl restart "$1"
elif command -v service >/dev/null 2>&1; then service "$1" restart
else "/etc/init.d/$1" restart; fi"#;

fn install_token_windows(f: &FileWrite, stamp: &str) -> String {
    format!(
        "$ErrorActionPreference = 'Stop'; Get-ChildItem -LiteralPath {dir} -Filter *.tok | ForEach-Object {{ $b = $_.FullName + {suffix}; Move-Item -Force -LiteralPath $_.FullName -Destination $b; $b }}; Move-Item -Force -LiteralPath {temp} -Destination {path}",
        dir = ps_quote(&f.dir),
        suffix = ps_quote(&format!(".bak-{stamp}")),
        temp = ps_quote(&f.temp),
        path = ps_quote(&f.path),
    )
}

fn check(out: &agent::Output, what: &str) -> Result<(), GuestError> {
    if out.ok() {
        return Ok(());
    }
    let msg = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(GuestError::Program(format!(
        "{what} failed in the guest (exit {}): {}",
        out.exit.map_or("signal".into(), |c| c.to_string()),
        crate::printable(msg.trim(), 200)
    )))
}

/// Reads the guest again and again until it is licensed or `budget` has passed; returns the
/// last reading.
pub fn wait_licensed(
    agent: &dyn Agent,
    domain: &str,
    budget: Duration,
    now: impl Fn() -> i64,
) -> GuestRow {
    let deadline = Instant::now() + budget;
    loop {
        let mut row = GuestRow::new(domain, "running");
        probe::probe(agent, &mut row, now());
        if row.license.as_deref() == Some("licensed") || Instant::now() >= deadline {
            return row;
        }
        std::thread::sleep(
            Duration::from_secs(2).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
}
