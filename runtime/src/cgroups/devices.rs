//! Device cgroup rules (`linux.resources.devices`).
//!
//! The spec's rules are applied in order and then the default allowed devices below are appended,
//! as runc does (so /dev/null, /dev/zero, ptys ... stay usable after a "deny all" rule).

use super::CgroupError;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// One normalized rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub allow: bool,
    /// 'a', 'b' or 'c'
    pub typ: char,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    /// subset of "rwm", never empty
    pub access: String,
}

impl Rule {
    /// The line for devices.allow / devices.deny.
    pub fn v1_line(&self) -> String {
        let n = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_else(|| "*".into());
        if self.typ == 'a' {
            return "a".into();
        }
        format!(
            "{} {}:{} {}",
            self.typ,
            n(self.major),
            n(self.minor),
            self.access
        )
    }
}

fn rule(allow: bool, typ: char, major: Option<i64>, minor: Option<i64>, access: &str) -> Rule {
    Rule {
        allow,
        typ,
        major,
        minor,
        access: access.to_string(),
    }
}

/// runc's default allowed devices: mknod of any device, null, zero, full, random, urandom, tty, ptmx,
/// pts, tun.
pub fn default_allowed_devices() -> Vec<LinuxDeviceCgroup> {
    default_rules()
        .into_iter()
        .map(|r| {
            let mut d = LinuxDeviceCgroup::default();
            d.set_allow(true);
            d.set_typ(Some(match r.typ {
                'b' => LinuxDeviceType::B,
                'c' => LinuxDeviceType::C,
                _ => LinuxDeviceType::A,
            }));
            d.set_major(r.major);
            d.set_minor(r.minor);
            d.set_access(Some(r.access));
            d
        })
        .collect()
}

fn default_rules() -> Vec<Rule> {
    vec![
        rule(true, 'c', None, None, "m"),
        rule(true, 'b', None, None, "m"),
        rule(true, 'c', Some(1), Some(3), "rwm"),
        rule(true, 'c', Some(1), Some(8), "rwm"),
        rule(true, 'c', Some(1), Some(7), "rwm"),
        rule(true, 'c', Some(5), Some(0), "rwm"),
        rule(true, 'c', Some(1), Some(5), "rwm"),
        rule(true, 'c', Some(1), Some(9), "rwm"),
        rule(true, 'c', Some(136), None, "rwm"),
        rule(true, 'c', Some(5), Some(2), "rwm"),
        rule(true, 'c', Some(10), Some(200), "rwm"),
    ]
}

/// Normalize the spec's rules and append the defaults.
///
/// A type "a" rule that names a major/minor or not all of "rwm" cannot be written as "a" (the kernel
/// reads a bare "a" as "every device, every access"), so it becomes one "b" and one "c" rule.
pub(crate) fn rules(spec: Option<&Vec<LinuxDeviceCgroup>>) -> Result<Vec<Rule>, CgroupError> {
    let mut out = Vec::new();
    for (i, d) in spec.map(|v| v.as_slice()).unwrap_or(&[]).iter().enumerate() {
        let field = format!("linux.resources.devices[{i}]");
        let access = d.access().clone().unwrap_or_default();
        let access = if access.is_empty() {
            "rwm".to_string()
        } else {
            access
        };
        if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(CgroupError::InvalidValue {
                field: format!("{field}.access"),
                detail: format!("{access:?} is not a subset of \"rwm\""),
            });
        }
        for (v, n) in [(d.major(), "major"), (d.minor(), "minor")] {
            if let Some(x) = v {
                if x < 0 {
                    return Err(CgroupError::InvalidValue {
                        field: format!("{field}.{n}"),
                        detail: format!("{x} is negative (omit it for a wildcard)"),
                    });
                }
            }
        }
        let typ = match d.typ() {
            None | Some(LinuxDeviceType::A) => 'a',
            Some(LinuxDeviceType::B) => 'b',
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => 'c',
            Some(LinuxDeviceType::P) => {
                return Err(CgroupError::InvalidValue {
                    field: format!("{field}.type"),
                    detail: "\"p\" (fifo) is not a device cgroup type; use a, b or c".into(),
                })
            }
        };
        let full = access.contains('r') && access.contains('w') && access.contains('m');
        if typ == 'a' && (d.major().is_some() || d.minor().is_some() || !full) {
            for t in ['b', 'c'] {
                out.push(rule(d.allow(), t, d.major(), d.minor(), &access));
            }
        } else {
            out.push(rule(d.allow(), typ, d.major(), d.minor(), &access));
        }
    }
    out.extend(default_rules());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(
        allow: bool,
        typ: Option<LinuxDeviceType>,
        maj: Option<i64>,
        min: Option<i64>,
        acc: &str,
    ) -> LinuxDeviceCgroup {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(allow);
        d.set_typ(typ);
        d.set_major(maj);
        d.set_minor(min);
        d.set_access(Some(acc.to_string()));
        d
    }

    #[test]
    fn normalizes_rules() {
        let spec = vec![
            dev(false, None, None, None, "rwm"),
            dev(true, Some(LinuxDeviceType::C), Some(1), Some(3), "rw"),
            dev(true, Some(LinuxDeviceType::A), Some(4), None, "r"),
            dev(true, Some(LinuxDeviceType::B), Some(8), Some(0), ""),
        ];
        let r = rules(Some(&spec)).unwrap();
        assert_eq!(r[0].v1_line(), "a");
        assert!(!r[0].allow);
        assert_eq!(r[1].v1_line(), "c 1:3 rw");
        assert_eq!(r[2].v1_line(), "b 4:* r");
        assert_eq!(r[3].v1_line(), "c 4:* r");
        assert_eq!(r[4].v1_line(), "b 8:0 rwm");
        assert_eq!(r[5].v1_line(), "c *:* m");
        assert_eq!(r.len(), 5 + default_rules().len());
        assert_eq!(default_allowed_devices().len(), default_rules().len());
    }

    #[test]
    fn rejects_bad_rules() {
        let e = rules(Some(&vec![dev(true, None, None, None, "rx")])).unwrap_err();
        assert!(e.to_string().contains("devices[0].access"), "{e}");
        let e = rules(Some(&vec![dev(
            true,
            Some(LinuxDeviceType::P),
            None,
            None,
            "r",
        )]))
        .unwrap_err();
        assert!(e.to_string().contains("devices[0].type"), "{e}");
        let e = rules(Some(&vec![dev(
            true,
            Some(LinuxDeviceType::C),
            Some(-2),
            None,
            "r",
        )]))
        .unwrap_err();
        assert!(e.to_string().contains("major"), "{e}");
    }
}
