//! The QEMU guest agent's commands vgpuctl uses, over any transport that sends one command and
//! returns its reply ([`Agent`]; vgpuctl's is libvirt's `virDomainQemuAgentCommand`, tests use a
//! scripted one). Every call carries a timeout, and waiting for a program is bounded too: a
//! guest that stops answering costs seconds, never a hang.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{b64, GuestError};

/// Timeout of one agent command.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one guest-agent command and returns the reply's `return` member.
pub trait Agent {
    /// `command` is `{"execute": ..., "arguments": ...}`; waits at most `timeout`.
    fn call(&self, command: &Value, timeout: Duration) -> Result<Value, GuestError>;
}

fn call(agent: &dyn Agent, execute: &str, arguments: Value) -> Result<Value, GuestError> {
    let mut cmd = json!({ "execute": execute });
    if !arguments.is_null() {
        cmd["arguments"] = arguments;
    }
    agent.call(&cmd, CALL_TIMEOUT)
}

fn protocol(what: &str, reply: &Value) -> GuestError {
    GuestError::Protocol(format!(
        "{what}: unexpected reply {}",
        crate::printable(&reply.to_string(), 200)
    ))
}

/// What `guest-info` says: the agent's version and whether it lets us run programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// qemu-ga's version.
    pub version: String,
    /// Whether `guest-exec` is supported and enabled.
    pub exec_enabled: bool,
}

/// `guest-info`.
pub fn info(agent: &dyn Agent) -> Result<AgentInfo, GuestError> {
    let r = call(agent, "guest-info", Value::Null)?;
    let version = r["version"].as_str().unwrap_or("").to_string();
    let exec_enabled = r["supported_commands"].as_array().is_some_and(|cmds| {
        cmds.iter()
            .any(|c| c["name"] == "guest-exec" && c["enabled"].as_bool().unwrap_or(true))
    });
    Ok(AgentInfo {
        version,
        exec_enabled,
    })
}

/// The guest's operating system family, which decides paths and commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    /// Linux (and anything not Windows).
    Linux,
    /// Windows.
    Windows,
}

/// `guest-get-osinfo`: the family and a printable name. An agent too old for the command is
/// taken for Linux, the only family whose agents predate it.
pub fn os(agent: &dyn Agent) -> Result<(Os, Option<String>), GuestError> {
    match call(agent, "guest-get-osinfo", Value::Null) {
        Ok(r) => {
            let os = if r["id"] == "mswindows" {
                Os::Windows
            } else {
                Os::Linux
            };
            let name = r["pretty-name"].as_str().or(r["name"].as_str());
            Ok((os, name.map(str::to_string)))
        }
        Err(GuestError::CommandFailed(_)) => Ok((Os::Linux, None)),
        Err(e) => Err(e),
    }
}

/// What a program run in the guest did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Its exit code (`None`: killed by a signal).
    pub exit: Option<i64>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Output {
    /// Whether it exited 0.
    pub fn ok(&self) -> bool {
        self.exit == Some(0)
    }
}

/// Runs `path args...` in the guest with `guest-exec` and waits for it with
/// `guest-exec-status`, at most `budget`. A program that is not there is
/// [`GuestError::NoProgram`].
pub fn exec(
    agent: &dyn Agent,
    path: &str,
    args: &[&str],
    budget: Duration,
) -> Result<Output, GuestError> {
    let started = call(
        agent,
        "guest-exec",
        json!({ "path": path, "arg": args, "capture-output": true }),
    )
    .map_err(|e| match e {
        GuestError::CommandFailed(m) if missing(&m) => GuestError::NoProgram(path.to_string()),
        e => e,
    })?;
    let pid = started["pid"]
        .as_i64()
        .ok_or_else(|| protocol("guest-exec", &started))?;
    let deadline = Instant::now() + budget;
    let mut pause = Duration::from_millis(50);
    loop {
        let st = call(agent, "guest-exec-status", json!({ "pid": pid }))?;
        if st["exited"].as_bool().unwrap_or(false) {
            let text = |k: &str| {
                st[k]
                    .as_str()
                    .and_then(b64::decode)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            };
            return Ok(Output {
                exit: st["exitcode"].as_i64(),
                stdout: text("out-data"),
                stderr: text("err-data"),
            });
        }
        if Instant::now() >= deadline {
            return Err(GuestError::Timeout(format!(
                "{path} did not finish within {} s (it may still run in the guest)",
                budget.as_secs()
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Whether an agent's spawn failure says the program does not exist.
fn missing(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("no such file") || m.contains("cannot find") || m.contains("not found")
}

/// Writes `data` to `path` in the guest (created or truncated) with `guest-file-*`. The handle
/// is closed even when a write fails.
pub fn write_file(agent: &dyn Agent, path: &str, data: &[u8]) -> Result<(), GuestError> {
    let opened = call(
        agent,
        "guest-file-open",
        json!({ "path": path, "mode": "wb" }),
    )?;
    let handle = opened
        .as_i64()
        .ok_or_else(|| protocol("guest-file-open", &opened))?;
    let mut result = Ok(());
    for chunk in data.chunks(48 * 1024) {
        let r = call(
            agent,
            "guest-file-write",
            json!({ "handle": handle, "buf-b64": b64::encode(chunk) }),
        );
        match r {
            Ok(w) if w["count"].as_u64() == Some(chunk.len() as u64) => {}
            Ok(w) => {
                result = Err(protocol("guest-file-write (short write)", &w));
                break;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let closed = call(agent, "guest-file-close", json!({ "handle": handle }));
    result.and(closed.map(|_| ()))
}

/// Reads `path` from the guest; `None` when it does not exist.
pub fn read_file(agent: &dyn Agent, path: &str) -> Result<Option<Vec<u8>>, GuestError> {
    let opened = match call(
        agent,
        "guest-file-open",
        json!({ "path": path, "mode": "rb" }),
    ) {
        Ok(h) => h,
        Err(GuestError::CommandFailed(m)) if missing(&m) => return Ok(None),
        Err(e) => return Err(e),
    };
    let handle = opened
        .as_i64()
        .ok_or_else(|| protocol("guest-file-open", &opened))?;
    let mut data = Vec::new();
    let result = loop {
        let r = match call(
            agent,
            "guest-file-read",
            json!({ "handle": handle, "count": 65536 }),
        ) {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        match r["buf-b64"].as_str().and_then(b64::decode) {
            Some(b) => data.extend(b),
            None => break Err(protocol("guest-file-read", &r)),
        }
        if r["eof"].as_bool().unwrap_or(true) || data.len() > 1 << 20 {
            break Ok(());
        }
    };
    let _ = call(agent, "guest-file-close", json!({ "handle": handle }));
    result.map(|()| Some(data))
}
