//! Where a container's cgroup goes: `linux.cgroupsPath` rules (cgroupfs driver, as runc) and
//! the systemd driver's `slice:prefix:name` syntax.
//!
//! cgroupfs driver (what Husk implements):
//! - absolute path `/a/b`: used as given below the root of every hierarchy;
//! - relative path `a/b`: below the caller's own cgroup, per hierarchy (read from /proc/self/cgroup),
//!   so on a host where the caller's memory cgroup is `/x` the memory cgroup is `/x/a/b` while the other
//!   controllers use `/a/b` when the caller sits at their root;
//! - no / empty path: the relative path `<container id>` (runc's default), i.e. `<own cgroup>/<id>`.
//!
//! `..` components are rejected so a path can never leave the hierarchy.

use super::CgroupError;
use std::path::Path;

/// The resolved placement of a container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Below each hierarchy's root; normalized to "/a/b".
    Absolute(String),
    /// Below the caller's own cgroup in each hierarchy; normalized to "a/b".
    Relative(String),
}

/// Resolve `linux.cgroupsPath` (cgroupfs driver) for container `id`.
pub fn placement(cgroups_path: Option<&Path>, id: &str) -> Result<Placement, CgroupError> {
    let raw = cgroups_path
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let invalid = |detail: &str| CgroupError::InvalidPath {
        path: raw.clone(),
        detail: detail.to_string(),
    };
    if raw.is_empty() {
        if id.is_empty() || id.contains('/') || id == "." || id == ".." {
            return Err(CgroupError::InvalidPath {
                path: id.to_string(),
                detail: "container id cannot be used as a cgroup name".into(),
            });
        }
        return Ok(Placement::Relative(id.to_string()));
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(invalid("'..' is not allowed in cgroupsPath")),
            c => parts.push(c),
        }
    }
    if raw.starts_with('/') {
        if parts.is_empty() {
            return Err(invalid("the root cgroup cannot be a container's cgroup"));
        }
        Ok(Placement::Absolute(format!("/{}", parts.join("/"))))
    } else {
        if parts.is_empty() {
            return Err(invalid("empty relative path"));
        }
        Ok(Placement::Relative(parts.join("/")))
    }
}

/// A systemd driver cgroupsPath `slice:prefix:name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdPath {
    /// Parent slice, e.g. "system.slice" (default "system.slice").
    pub slice: String,
    /// Scope prefix, e.g. "husk" (default "husk").
    pub prefix: String,
    /// Unit name part (default: the container id).
    pub name: String,
}

impl SystemdPath {
    /// The unit to create: `<prefix>-<name>.scope`, or `<name>` when it is itself a slice.
    pub fn unit_name(&self) -> String {
        if self.name.ends_with(".slice") {
            self.name.clone()
        } else if self.prefix.is_empty() {
            format!("{}.scope", self.name)
        } else {
            format!("{}-{}.scope", self.prefix, self.name)
        }
    }

    /// The cgroup path systemd would give the unit: expanded slice + unit.
    pub fn cgroup_path(&self) -> Result<String, CgroupError> {
        let slice = expand_slice(&self.slice)?;
        Ok(format!(
            "{}/{}",
            slice.trim_end_matches('/'),
            self.unit_name()
        ))
    }
}

/// Parse a systemd driver cgroupsPath ("slice:prefix:name"; empty → system.slice:husk:<id>).
pub fn parse_systemd_path(
    cgroups_path: Option<&Path>,
    id: &str,
) -> Result<SystemdPath, CgroupError> {
    let raw = cgroups_path
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if raw.is_empty() {
        return Ok(SystemdPath {
            slice: "system.slice".into(),
            prefix: "husk".into(),
            name: id.to_string(),
        });
    }
    let parts: Vec<&str> = raw.split(':').collect();
    if parts.len() != 3 {
        return Err(CgroupError::InvalidPath {
            path: raw.clone(),
            detail: "the systemd cgroup driver expects \"slice:prefix:name\"".into(),
        });
    }
    let slice = if parts[0].is_empty() {
        "system.slice"
    } else {
        parts[0]
    };
    let name = if parts[2].is_empty() { id } else { parts[2] };
    let p = SystemdPath {
        slice: slice.to_string(),
        prefix: parts[1].to_string(),
        name: name.to_string(),
    };
    if p.name.contains('/') || p.prefix.contains('/') {
        return Err(CgroupError::InvalidPath {
            path: raw,
            detail: "systemd unit names cannot contain '/'".into(),
        });
    }
    expand_slice(&p.slice)?;
    Ok(p)
}

/// Expand a slice name into its cgroup path: "a-b-c.slice" → "/a.slice/a-b.slice/a-b-c.slice",
/// "-.slice" → "/".
pub fn expand_slice(slice: &str) -> Result<String, CgroupError> {
    let bad = |detail: &str| CgroupError::InvalidPath {
        path: slice.to_string(),
        detail: detail.to_string(),
    };
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(bad("a systemd slice name must end in \".slice\""));
    };
    if slice.contains('/') {
        return Err(bad("a systemd slice name cannot contain '/'"));
    }
    if stem == "-" {
        return Ok("/".into());
    }
    if stem.is_empty() || stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
        return Err(bad("invalid systemd slice name"));
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for comp in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(comp);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pl(p: &str, id: &str) -> Result<Placement, CgroupError> {
        placement(Some(Path::new(p)), id)
    }

    #[test]
    fn cgroupfs_rules() {
        assert_eq!(pl("/a/b", "x").unwrap(), Placement::Absolute("/a/b".into()));
        assert_eq!(
            pl("//a/./b/", "x").unwrap(),
            Placement::Absolute("/a/b".into())
        );
        assert_eq!(pl("a/b", "x").unwrap(), Placement::Relative("a/b".into()));
        assert_eq!(pl("", "c1").unwrap(), Placement::Relative("c1".into()));
        assert_eq!(
            placement(None, "c1").unwrap(),
            Placement::Relative("c1".into())
        );
        assert!(pl("/a/../b", "x").unwrap_err().to_string().contains(".."));
        assert!(pl("/", "x").is_err());
        assert!(pl(".", "x").is_err());
        assert!(placement(None, "a/b").is_err());
    }

    #[test]
    fn systemd_paths() {
        let p = parse_systemd_path(Some(Path::new("machine.slice:libpod:abc")), "id").unwrap();
        assert_eq!(p.unit_name(), "libpod-abc.scope");
        assert_eq!(p.cgroup_path().unwrap(), "/machine.slice/libpod-abc.scope");
        let p = parse_systemd_path(Some(Path::new("a-b-c.slice:husk:x")), "id").unwrap();
        assert_eq!(
            p.cgroup_path().unwrap(),
            "/a.slice/a-b.slice/a-b-c.slice/husk-x.scope"
        );
        let p = parse_systemd_path(Some(Path::new(":husk:")), "id").unwrap();
        assert_eq!(p.cgroup_path().unwrap(), "/system.slice/husk-id.scope");
        let p = parse_systemd_path(None, "id").unwrap();
        assert_eq!(p.unit_name(), "husk-id.scope");
        let p = parse_systemd_path(Some(Path::new("-.slice::sub.slice")), "id").unwrap();
        assert_eq!(p.cgroup_path().unwrap(), "/sub.slice");
        assert!(parse_systemd_path(Some(Path::new("/a/b")), "id").is_err());
        assert!(parse_systemd_path(Some(Path::new("a--b.slice:p:n")), "id").is_err());
        assert!(parse_systemd_path(Some(Path::new("nope:p:n")), "id").is_err());
        assert!(expand_slice("-a.slice").is_err());
    }
}
