//! Parsing `linux.seccomp` from JSON with errors that name the offending field.
//!
//! serde's own message for an unknown enum value names the value but not where it sits;
//! this walks the JSON first so that an unknown action, operator, architecture or flag
//! is reported as e.g. `linux.seccomp.syscalls[3] (names ["keyctl"]).action: unknown
//! action "SCMP_ACT_FOO"`.

use oci_spec::runtime::LinuxSeccomp;
use serde_json::Value;

use super::{Result, SeccompError};

pub const ACTIONS: &[&str] = &[
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
];
pub const OPERATORS: &[&str] = &[
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];
pub const ARCHES: &[&str] = &[
    "SCMP_ARCH_NATIVE",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];
pub const FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

fn check(field: &str, v: Option<&Value>, known: &[&str], kind: &str) -> Result<()> {
    match v {
        None => Ok(()),
        Some(Value::String(s)) if known.contains(&s.as_str()) => Ok(()),
        Some(Value::String(s)) => Err(SeccompError::Invalid(format!(
            "{field}: unknown {kind} {s:?} (known: {})",
            known.join(", ")
        ))),
        Some(other) => Err(SeccompError::Invalid(format!(
            "{field}: {kind} must be a string, got {other}"
        ))),
    }
}

/// Parses the `linux.seccomp` object of config.json.
pub fn parse_seccomp(value: &Value) -> Result<LinuxSeccomp> {
    check(
        "linux.seccomp.defaultAction",
        value.get("defaultAction"),
        ACTIONS,
        "action",
    )?;
    if let Some(Value::Array(arches)) = value.get("architectures") {
        for (i, a) in arches.iter().enumerate() {
            check(
                &format!("linux.seccomp.architectures[{i}]"),
                Some(a),
                ARCHES,
                "architecture",
            )?;
        }
    }
    if let Some(Value::Array(flags)) = value.get("flags") {
        for (i, f) in flags.iter().enumerate() {
            check(&format!("linux.seccomp.flags[{i}]"), Some(f), FLAGS, "flag")?;
        }
    }
    if let Some(Value::Array(syscalls)) = value.get("syscalls") {
        for (i, sc) in syscalls.iter().enumerate() {
            let names = sc.get("names").map(|n| n.to_string()).unwrap_or_default();
            let field = format!("linux.seccomp.syscalls[{i}] (names {names})");
            check(
                &format!("{field}.action"),
                sc.get("action"),
                ACTIONS,
                "action",
            )?;
            if let Some(Value::Array(args)) = sc.get("args") {
                for (j, a) in args.iter().enumerate() {
                    check(
                        &format!("{field}.args[{j}].op"),
                        a.get("op"),
                        OPERATORS,
                        "operator",
                    )?;
                }
            }
        }
    }
    serde_json::from_value(value.clone())
        .map_err(|e| SeccompError::Invalid(format!("linux.seccomp: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_action_and_operator_are_named() {
        let v: Value = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["keyctl"],"action":"SCMP_ACT_FOO"}]}"#,
        )
        .unwrap();
        let e = parse_seccomp(&v).unwrap_err().to_string();
        assert!(
            e.contains("syscalls[0]") && e.contains("keyctl") && e.contains("SCMP_ACT_FOO"),
            "{e}"
        );
        let v: Value = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["personality"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_XX"}]}]}"#,
        )
        .unwrap();
        let e = parse_seccomp(&v).unwrap_err().to_string();
        assert!(
            e.contains("args[0].op") && e.contains("personality") && e.contains("SCMP_CMP_XX"),
            "{e}"
        );
        let v: Value = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"]}"#,
        )
        .unwrap();
        assert!(parse_seccomp(&v).is_ok());
    }
}
