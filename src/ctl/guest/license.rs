//! What an operator hands over for licensing, checked on the host before anything is written in
//! a guest: an NLS client configuration token, or a legacy licence server for `gridd.conf`.
//!
//! A client configuration token (`client_configuration_token_<date>.tok`, downloaded from the
//! NVIDIA Licensing Portal or a DLS instance) is one compact JWS: three base64url segments
//! joined by dots, the first a JSON header naming the signature algorithm. The guest's licensing
//! service cannot tell us why it ignores a broken file, so a file that is not one is refused
//! here, with what is wrong with it.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::b64;

/// Smallest and largest plausible token: a header, a claims set with the service instance's
/// public key, and an RSA signature are well over 100 bytes; real ones are a few kilobytes.
const TOKEN_MIN: usize = 100;
const TOKEN_MAX: usize = 64 * 1024;

/// The legacy licence server's default port.
pub const DEFAULT_SERVER_PORT: u16 = 7070;

/// Why a token, server or feature type is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    /// The token file is not a client configuration token.
    #[error("{0} is not an NLS client configuration token: {1}")]
    NotAToken(String, String),
    /// `HOST[:PORT]` does not parse.
    #[error("--license-server '{0}': {1}")]
    BadServer(String, String),
    /// The server does not accept TCP connections from this host.
    #[error("licence server {0} is unreachable from this host (checked: a TCP connection from the host within {1} s: {2}); nothing was written in the guest")]
    Unreachable(String, u64, String),
    /// `--feature-type` is not one NVIDIA defines.
    #[error("--feature-type {0}: must be 0 (unlicensed), 1 (NVIDIA vGPU), 2 (RTX Virtual Workstation) or 4 (Virtual Compute Server)")]
    BadFeatureType(u32),
}

/// Checks a token file's contents; returns the token text without surrounding whitespace.
pub fn check_token(name: &str, bytes: &[u8]) -> Result<String, LicenseError> {
    let bad = |why: &str| LicenseError::NotAToken(name.to_string(), why.to_string());
    let text = std::str::from_utf8(bytes).map_err(|_| bad("it is not text"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(bad("it is empty"));
    }
    if token.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(bad(
            "it holds spaces, line breaks or non-ASCII characters inside (one token is one line of base64url text)",
        ));
    }
    if token.len() < TOKEN_MIN || token.len() > TOKEN_MAX {
        return Err(bad(&format!(
            "{} bytes; a token is between {TOKEN_MIN} bytes and {} KiB",
            token.len(),
            TOKEN_MAX / 1024
        )));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(bad(&format!(
            "it has {} dot-separated part(s); a token has three (header.claims.signature)",
            parts.len()
        )));
    }
    let header = b64::decode_url(parts[0])
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .ok_or_else(|| bad("its first part is not a base64url JSON header"))?;
    if header.get("alg").and_then(|a| a.as_str()).is_none() {
        return Err(bad("its header names no signature algorithm (alg)"));
    }
    if parts[1..].iter().any(|p| b64::decode_url(p).is_none()) {
        return Err(bad("its claims or signature part is not base64url"));
    }
    Ok(token.to_string())
}

/// A legacy licence server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Host name or address (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Server {
    /// Parses `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`.
    pub fn parse(spec: &str) -> Result<Server, LicenseError> {
        let bad = |why: &str| LicenseError::BadServer(crate::printable(spec, 80), why.into());
        let s = spec.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, tail) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
            match tail {
                "" => (h, None),
                t => (
                    h,
                    Some(
                        t.strip_prefix(':')
                            .ok_or_else(|| bad("expected :PORT after ']'"))?,
                    ),
                ),
            }
        } else {
            match s.split_once(':') {
                Some((_, p)) if p.contains(':') => {
                    return Err(bad("write an IPv6 address as [ADDR]:PORT"))
                }
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_');
        if host.is_empty() || !host.chars().all(ok_char) || host.len() > 253 {
            return Err(bad("expected a host name or address"));
        }
        let port = match port {
            None => DEFAULT_SERVER_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("the port must be 1-65535"))?,
        };
        Ok(Server {
            host: host.to_string(),
            port,
        })
    }

    /// Refuses a server that does not accept a TCP connection from this host within `limit`.
    /// This is all that is checked: the guest's route to it may still differ.
    pub fn check_reachable(&self, limit: Duration) -> Result<(), LicenseError> {
        let unreachable =
            |why: String| LicenseError::Unreachable(self.to_string(), limit.as_secs().max(1), why);
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("cannot resolve {}: {e}", self.host)))?
            .collect();
        let mut last = String::from("no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, limit) {
                Ok(_) => return Ok(()),
                Err(e) => last = format!("{a}: {e}"),
            }
        }
        Err(unreachable(last))
    }
}

/// Checks `--feature-type`.
pub fn check_feature_type(n: u32) -> Result<u32, LicenseError> {
    match n {
        0 | 1 | 2 | 4 => Ok(n),
        _ => Err(LicenseError::BadFeatureType(n)),
    }
}

/// `gridd.conf` with `ServerAddress`, `ServerPort` and `FeatureType` set: each first active
/// (uncommented) line of a key is replaced, missing keys are appended, everything else (other
/// keys, comments, the template's explanations) stays as it was.
pub fn edit_gridd_conf(old: &str, server: &Server, feature_type: u32) -> String {
    let wanted = [
        ("ServerAddress", server.host.clone()),
        ("ServerPort", server.port.to_string()),
        ("FeatureType", feature_type.to_string()),
    ];
    let mut done = [false; 3];
    let mut out = String::with_capacity(old.len() + 80);
    for line in old.lines() {
        let key = line.split_once('=').map(|(k, _)| k.trim());
        match wanted.iter().position(|(k, _)| Some(*k) == key) {
            Some(i) if !done[i] => {
                out.push_str(&format!("{}={}\n", wanted[i].0, wanted[i].1));
                done[i] = true;
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (i, (k, v)) in wanted.iter().enumerate() {
        if !done[i] {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token-shaped string: header `{"alg":"RS256","typ":"JWT"}`, claims, signature.
    pub(crate) fn sample_token() -> String {
        let header = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9";
        let claims = b64::encode(br#"{"iss":"NLS Service Instance","aud":"NLS Licensed Client","iat":1700000000,"service_instance_ref":"0b8c"}"#)
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_");
        format!("{header}.{claims}.c2lnbmF0dXJlLWJ5dGVzLWdvLWhlcmU")
    }

    #[test]
    fn a_compact_jws_token_is_accepted_with_its_trailing_newline_dropped() {
        let t = sample_token();
        assert_eq!(
            check_token("a.tok", format!("{t}\n").as_bytes()).unwrap(),
            t
        );
    }

    #[test]
    fn files_that_are_not_tokens_are_refused_with_the_reason() {
        let why = |b: &[u8]| check_token("f.tok", b).unwrap_err().to_string();
        assert!(why(b"").contains("it is empty"));
        assert!(why(b"   \n").contains("it is empty"));
        assert!(why(&[0xff, 0xfe]).contains("not text"));
        assert!(why(b"ServerAddress=1.2.3.4\nServerPort=7070\n").contains("line breaks"));
        assert!(why(b"abc.def.ghi").contains("bytes; a token is between"));
        let two = format!("{}.{}", "a".repeat(60), "b".repeat(60));
        assert!(why(two.as_bytes()).contains("2 dot-separated part(s)"));
        let not_json = format!("{}.{}.{}", "a".repeat(60), "b".repeat(60), "c".repeat(8));
        assert!(why(not_json.as_bytes()).contains("not a base64url JSON header"));
        let mut t = sample_token();
        t.push_str("+/");
        assert!(why(t.as_bytes()).contains("not base64url"));
    }

    #[test]
    fn servers_parse_with_the_default_port_and_ipv6_in_brackets() {
        let s = Server::parse("lic.example.com").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("lic.example.com", 7070));
        assert_eq!(Server::parse("10.0.0.5:27000").unwrap().port, 27000);
        let v6 = Server::parse("[fd00::5]:7071").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("fd00::5", 7071));
        assert_eq!(v6.to_string(), "[fd00::5]:7071");
        for bad in ["", "h:0", "h:70000", "fd00::5", "a b", "[fd00::5"] {
            assert!(Server::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_unreachable_server_is_refused_saying_what_was_checked() {
        // A port nothing listens on: bind, learn the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = Server::parse(&format!("127.0.0.1:{port}")).unwrap();
        let e = s
            .check_reachable(Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a TCP connection from the host"), "{e}");
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let up = Server::parse(&l.local_addr().unwrap().to_string()).unwrap();
        up.check_reachable(Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn feature_types_are_those_nvidia_defines() {
        for n in [0, 1, 2, 4] {
            assert_eq!(check_feature_type(n), Ok(n));
        }
        assert!(check_feature_type(3).is_err());
    }

    #[test]
    fn gridd_conf_keeps_everything_but_the_three_keys() {
        let old = "# template\n#ServerAddress=\nServerAddress=old\nEnableUI=FALSE\nFeatureType=0\n";
        let s = Server::parse("lic:7071").unwrap();
        assert_eq!(
            edit_gridd_conf(old, &s, 2),
            "# template\n#ServerAddress=\nServerAddress=lic\nEnableUI=FALSE\nFeatureType=2\nServerPort=7071\n"
        );
        assert_eq!(
            edit_gridd_conf("", &s, 1),
            "ServerAddress=lic\nServerPort=7071\nFeatureType=1\n"
        );
    }
}
