//! Small helpers to read and write cgroup files; every error names the file (and the value).

use super::CgroupError;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Write `value` to `dir/file` in a single write(2), as the kernel expects for cgroup files.
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    write_path(&dir.join(file), value)
}

pub(crate) fn write_path(path: &Path, value: &str) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    let n = f.write(value.as_bytes()).map_err(err)?;
    if n != value.len() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("short write ({n} of {} bytes)", value.len()),
        )));
    }
    Ok(())
}

/// Read `dir/file`, trimmed.
pub(crate) fn read(dir: &Path, file: &str) -> Result<String, CgroupError> {
    read_path(&dir.join(file))
}

pub(crate) fn read_path(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| CgroupError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Read a single unsigned number; "max" (v2) and negative values (v1 "-1") read as u64::MAX.
pub(crate) fn read_u64(dir: &Path, file: &str) -> Result<u64, CgroupError> {
    let s = read(dir, file)?;
    parse_u64(&s).ok_or_else(|| CgroupError::Parse {
        path: dir.join(file),
        content: s,
    })
}

pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" {
        return Some(u64::MAX);
    }
    if let Ok(v) = s.parse::<u64>() {
        return Some(v);
    }
    match s.parse::<i64>() {
        Ok(v) if v < 0 => Some(u64::MAX),
        _ => None,
    }
}

/// Parse "key value" lines (memory.stat, cpu.stat, memory.events, cgroup.events ...).
pub(crate) fn read_flat_keyed(dir: &Path, file: &str) -> Result<Vec<(String, u64)>, CgroupError> {
    let path = dir.join(file);
    let s = read_path(&path)?;
    let mut out = Vec::new();
    for line in s.lines() {
        let mut it = line.split_whitespace();
        let (Some(k), Some(v), None) = (it.next(), it.next(), it.next()) else {
            return Err(CgroupError::Parse {
                path,
                content: line.to_string(),
            });
        };
        let Some(v) = parse_u64(v) else {
            return Err(CgroupError::Parse {
                path,
                content: line.to_string(),
            });
        };
        out.push((k.to_string(), v));
    }
    Ok(out)
}

pub(crate) fn keyed(pairs: &[(String, u64)], key: &str) -> Option<u64> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// Parse a cgroup.procs file.
pub(crate) fn read_pids(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    let s = read_path(&path)?;
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse::<i32>().map_err(|_| CgroupError::Parse {
                path: path.clone(),
                content: l.to_string(),
            })
        })
        .collect()
}

/// All directories below `dir` (not `dir` itself), deepest first.
pub(crate) fn subdirs_deepest_first(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut out = Vec::new();
    collect_subdirs(dir, &mut out)?;
    out.reverse();
    Ok(out)
}

fn collect_subdirs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    for ent in rd {
        let ent = ent.map_err(|source| CgroupError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let ft = ent.file_type().map_err(|source| CgroupError::Read {
            path: ent.path(),
            source,
        })?;
        if ft.is_dir() {
            let p = ent.path();
            out.push(p.clone());
            collect_subdirs(&p, out)?;
        }
    }
    Ok(())
}

/// Parse a cpu/mem list like "0-3,7" into the members.
pub(crate) fn parse_list(s: &str) -> Option<Vec<u16>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: u16 = a.trim().parse().ok()?;
                let b: u16 = b.trim().parse().ok()?;
                if a > b {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().ok()?),
        }
    }
    Some(out)
}
