//! The command line containerd gives a shim v2 binary, parsed as Go's `flag` package does
//! (`-name value`, `-name=value`, one or two dashes, bool flags without a value, `--` ends the
//! flags, the first non-flag argument is the action).

use std::ffi::OsString;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub debug: bool,
    pub version: bool,
    pub info: bool,
    pub namespace: String,
    pub id: String,
    pub socket: String,
    pub bundle: String,
    pub address: String,
    pub publish_binary: String,
    /// `start`, `delete`, or empty (serve).
    pub action: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("flag provided but not defined: -{0}")]
    Unknown(String),
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("invalid boolean value {value:?} for -{name}")]
    BadBool { name: String, value: String },
    #[error("argument {0:?} is not valid UTF-8")]
    NotUtf8(OsString),
}

fn parse_bool(name: &str, value: &str) -> Result<bool, FlagError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(FlagError::BadBool {
            name: name.to_string(),
            value: value.to_string(),
        }),
    }
}

/// What `-v` / `-version` prints: containerd-shim-runc-v2's text, with the commit the shim was
/// built from (build.rs) as its Revision and the Rust compiler in place of Go's.
pub fn version_text() -> String {
    format!(
        "containerd-shim-husk-v2:\n  Version:  {}\n  Revision: {}\n  Rust version: {}\n\n",
        env!("CARGO_PKG_VERSION"),
        env!("HUSK_GIT_COMMIT"),
        env!("HUSK_RUSTC_VERSION"),
    )
}

/// Parses the arguments after the program name.
pub fn parse(args: &[OsString]) -> Result<Flags, FlagError> {
    let mut flags = Flags::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let arg = arg
            .to_str()
            .ok_or_else(|| FlagError::NotUtf8(arg.clone()))?;
        if arg == "--" {
            break;
        }
        let Some(body) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|b| !b.is_empty() && !b.starts_with('-') && !b.starts_with('='))
        else {
            // The first non-flag argument is the action; Go stops parsing flags there.
            flags.action = arg.to_string();
            break;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let boolean = match name {
            "debug" => Some(&mut flags.debug),
            "v" | "version" => Some(&mut flags.version),
            "info" => Some(&mut flags.info),
            _ => None,
        };
        if let Some(b) = boolean {
            *b = match inline {
                Some(v) => parse_bool(name, v)?,
                None => true,
            };
            continue;
        }
        let slot = match name {
            "namespace" => &mut flags.namespace,
            "id" => &mut flags.id,
            "socket" => &mut flags.socket,
            "bundle" => &mut flags.bundle,
            "address" => &mut flags.address,
            "publish-binary" => &mut flags.publish_binary,
            _ => return Err(FlagError::Unknown(name.to_string())),
        };
        *slot = match inline {
            Some(v) => v.to_string(),
            None => {
                let v = it
                    .next()
                    .ok_or_else(|| FlagError::MissingValue(name.to_string()))?;
                v.to_str()
                    .ok_or_else(|| FlagError::NotUtf8(v.clone()))?
                    .to_string()
            }
        };
    }
    if flags.action.is_empty() {
        if let Some(a) = it.next() {
            flags.action = a.to_string_lossy().into_owned();
        }
    }
    Ok(flags)
}

/// The socket containerd expects a shim to serve on:
/// `unix:///run/containerd/s/<hex sha256 of "<address>/<namespace>/<id>">`.
pub fn socket_address(address: &str, namespace: &str, id: &str) -> String {
    use sha2::{Digest, Sha256};
    let path = std::path::Path::new(address).join(namespace).join(id);
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    let mut out = String::from("unix:///run/containerd/s/");
    for b in digest.iter() {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Flags, FlagError> {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse(&v)
    }

    #[test]
    fn version_text_is_runc_shims() {
        assert!(p(&["-v"]).unwrap().version);
        assert!(p(&["--version"]).unwrap().version);
        let v = version_text();
        let lines: Vec<&str> = v.lines().collect();
        assert_eq!(lines.len(), 5, "{v:?}");
        assert_eq!(lines[0], "containerd-shim-husk-v2:");
        assert_eq!(
            lines[1],
            format!("  Version:  {}", env!("CARGO_PKG_VERSION"))
        );
        let rev = lines[2].strip_prefix("  Revision: ").expect("Revision");
        assert!(
            rev == "unknown" || (rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())),
            "{rev:?}"
        );
        assert!(lines[3].starts_with("  Rust version: 1."), "{v:?}");
        assert_eq!(lines[4], "");
    }

    #[test]
    fn containerd_start_line() {
        let f = p(&[
            "-namespace",
            "default",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "c1",
            "-debug",
            "start",
        ])
        .unwrap();
        assert_eq!(f.namespace, "default");
        assert_eq!(f.address, "/run/containerd/containerd.sock");
        assert_eq!(f.publish_binary, "/usr/bin/containerd");
        assert_eq!(f.id, "c1");
        assert!(f.debug);
        assert_eq!(f.action, "start");
    }

    #[test]
    fn go_flag_forms() {
        let f = p(&["--id=x", "-bundle=/b", "--debug=false", "-v", "delete"]).unwrap();
        assert_eq!((f.id.as_str(), f.bundle.as_str()), ("x", "/b"));
        assert!(!f.debug);
        assert!(f.version);
        assert_eq!(f.action, "delete");
        let f = p(&["-id", "x", "--", "start"]).unwrap();
        assert_eq!(f.action, "start");
        let f = p(&["-id", "x"]).unwrap();
        assert_eq!(f.action, "");
    }

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(p(&["-nope"]), Err(FlagError::Unknown("nope".into())));
        assert_eq!(p(&["-id"]), Err(FlagError::MissingValue("id".into())));
        assert!(p(&["-debug=maybe"])
            .unwrap_err()
            .to_string()
            .contains("-debug"));
    }

    #[test]
    fn socket_address_is_containerds() {
        // sha256("/run/containerd/containerd.sock/default/c1"), as containerd's shims name it
        assert_eq!(
            socket_address("/run/containerd/containerd.sock", "default", "c1"),
            "unix:///run/containerd/s/d25aa4ef11a84e954e74a5bcff06557d0b6ea8d0c00243896f29826694bbd888"
        );
    }
}
