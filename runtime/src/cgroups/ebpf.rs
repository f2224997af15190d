//! cgroup v2 device rules: a BPF_PROG_TYPE_CGROUP_DEVICE program built from the rules and attached
//! to the container's cgroup (cgroup v2 has no devices.allow/deny files).
//!
//! Semantics: the last rule that matches a request decides (an allow rule matches when it grants every
//! requested access, a deny rule when it names any requested access); no match allows, which is what
//! a v2 cgroup without a program does. With the usual list (deny everything first, then allows) this
//! is the v1 behaviour.
//!
//! On update the new program is attached first (BPF_F_ALLOW_MULTI) and the previous ones are then
//! detached, so there is no window without a filter.

use super::devices::Rule;
use super::{CgroupError, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

// Kernel ABI constants (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

// bpf_cgroup_dev_ctx: access_type (access << 16 | type), major, minor.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// One eBPF instruction (struct bpf_insn).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    regs: u8, // dst in the low nibble, src in the high nibble
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

// opcodes
const LDX_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const MOV64_X: u8 = 0xbf; // dst = src
const MOV64_K: u8 = 0xb7; // dst = imm
const AND64_K: u8 = 0x57; // dst &= imm
const RSH64_K: u8 = 0x77; // dst >>= imm
const JNE_K: u8 = 0x55; // if dst != imm goto +off
const JEQ_K: u8 = 0x15; // if dst == imm goto +off
const EXIT: u8 = 0x95;

fn access_mask(access: &str) -> i32 {
    access.chars().fold(0, |m, c| {
        m | match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => 0,
        }
    })
}

/// Build the program. Registers: r2 type, r3 access, r4 major, r5 minor, r6 scratch.
pub(crate) fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(MOV64_X, 3, 2, 0, 0),
        insn(AND64_K, 2, 0, 0, 0xffff),
        insn(RSH64_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    // last matching rule wins: test them from the end
    for r in rules.iter().rev() {
        // jumps are emitted with off = -1 and patched to the end of the block
        let mut block: Vec<Insn> = Vec::new();
        match r.typ {
            'b' => block.push(insn(JNE_K, 2, 0, -1, DEV_BLOCK)),
            'c' => block.push(insn(JNE_K, 2, 0, -1, DEV_CHAR)),
            _ => {}
        }
        if let Some(m) = r.major {
            block.push(insn(JNE_K, 4, 0, -1, m as i32));
        }
        if let Some(m) = r.minor {
            block.push(insn(JNE_K, 5, 0, -1, m as i32));
        }
        let mask = access_mask(&r.access);
        if mask != ACC_READ | ACC_WRITE | ACC_MKNOD {
            block.push(insn(MOV64_X, 6, 3, 0, 0));
            if r.allow {
                // every requested bit must be granted
                block.push(insn(AND64_K, 6, 0, 0, !mask & 0x7));
                block.push(insn(JNE_K, 6, 0, -1, 0));
            } else {
                // any requested bit denied
                block.push(insn(AND64_K, 6, 0, 0, mask));
                block.push(insn(JEQ_K, 6, 0, -1, 0));
            }
        }
        block.push(insn(MOV64_K, 0, 0, 0, i32::from(r.allow)));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.off == -1 {
                ins.off = (len - i - 1) as i16;
            }
        }
        let unconditional = len == 2;
        p.extend(block);
        if unconditional {
            // matches everything: what follows would be unreachable, which the verifier rejects
            return p;
        }
    }
    p.push(insn(MOV64_K, 0, 0, 0, 1));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _pad: [u64; 8],
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _pad: [u32; 11],
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: [u32; 9],
}

#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
    _pad: [u32; 13],
}

/// bpf(2). SAFETY: `attr` must be the attribute struct `cmd` expects; every pointer in it must be
/// valid for the duration of the call.
unsafe fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> std::io::Result<libc::c_long> {
    let r = libc::syscall(
        libc::SYS_bpf,
        cmd,
        attr as *mut T as *mut libc::c_void,
        std::mem::size_of::<T>() as libc::c_uint,
    );
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn sys_err(op: String, e: std::io::Error) -> CgroupError {
    CgroupError::Sys {
        op,
        source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

fn load(prog: &[Insn]) -> Result<OwnedFd> {
    let license = b"Apache\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"husk_devcg");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    // SAFETY: attr is a BPF_PROG_LOAD attribute; insns, license and log outlive the call.
    match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        // SAFETY: a successful BPF_PROG_LOAD returns a new fd that we own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let verifier = String::from_utf8_lossy(&log[..end]).trim().to_string();
            Err(sys_err(
                format!(
                    "bpf(BPF_PROG_LOAD) of the device filter ({} instructions; verifier: {verifier:?})",
                    prog.len()
                ),
                e,
            ))
        }
    }
}

fn attached(cg: &OwnedFd, dir: &Path) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    // SAFETY: attr is a BPF_PROG_QUERY attribute; ids outlives the call and holds prog_cnt entries.
    unsafe { bpf(BPF_PROG_QUERY, &mut attr) }.map_err(|e| {
        sys_err(
            format!("bpf(BPF_PROG_QUERY) device programs of {}", dir.display()),
            e,
        )
    })?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

/// Load the program for `rules` and make it the only device filter of the cgroup `dir`.
pub(crate) fn apply(dir: &Path, rules: &[Rule]) -> Result<()> {
    let prog = load(&program(rules))?;
    let cg: OwnedFd = std::fs::File::open(dir)
        .map_err(|source| CgroupError::Read {
            path: dir.to_path_buf(),
            source,
        })?
        .into();
    let old = attached(&cg, dir)?;
    let mut attr = AttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    // SAFETY: attr is a BPF_PROG_ATTACH attribute with valid fds.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }.map_err(|e| {
        sys_err(
            format!("bpf(BPF_PROG_ATTACH) device filter to {}", dir.display()),
            e,
        )
    })?;
    for id in old {
        let mut ga = GetFdAttr {
            prog_id: id,
            ..Default::default()
        };
        // SAFETY: attr is a BPF_PROG_GET_FD_BY_ID attribute.
        let fd = match unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut ga) } {
            // SAFETY: new fd owned by us.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd as i32) },
            // detached meanwhile
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(sys_err(format!("bpf(BPF_PROG_GET_FD_BY_ID {id})"), e)),
        };
        let mut da = AttachAttr {
            target_fd: cg.as_raw_fd() as u32,
            attach_bpf_fd: fd.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        // SAFETY: attr is a BPF_PROG_DETACH attribute with valid fds.
        match unsafe { bpf(BPF_PROG_DETACH, &mut da) } {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                return Err(sys_err(
                    format!(
                        "bpf(BPF_PROG_DETACH) old device filter {id} from {}",
                        dir.display()
                    ),
                    e,
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the instructions `program` emits, to check the decisions.
    fn run(p: &[Insn], typ: i32, access: i32, major: i32, minor: i32) -> i64 {
        let ctx = [((access << 16) | typ) as u32, major as u32, minor as u32];
        let mut r = [0i64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0x0f) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => {
                    assert_eq!(src, 1);
                    r[dst] = i64::from(ctx[(i.off / 4) as usize]);
                }
                MOV64_X => r[dst] = r[src],
                MOV64_K => r[dst] = i64::from(i.imm),
                AND64_K => r[dst] &= i64::from(i.imm),
                RSH64_K => r[dst] >>= i.imm,
                JNE_K => {
                    if r[dst] != i64::from(i.imm) {
                        pc += i.off as usize
                    }
                }
                JEQ_K => {
                    if r[dst] == i64::from(i.imm) {
                        pc += i.off as usize
                    }
                }
                EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn rule(allow: bool, typ: char, major: Option<i64>, minor: Option<i64>, access: &str) -> Rule {
        Rule {
            allow,
            typ,
            major,
            minor,
            access: access.into(),
        }
    }

    #[test]
    fn decisions() {
        let rules = vec![
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), Some(3), "rwm"),
            rule(true, 'c', Some(136), None, "rw"),
            rule(true, 'b', Some(8), Some(0), "r"),
            rule(false, 'c', Some(1), Some(3), "w"),
        ];
        let p = program(&rules);
        let (c, b) = (DEV_CHAR, DEV_BLOCK);
        let (r, w, m) = (ACC_READ, ACC_WRITE, ACC_MKNOD);
        assert_eq!(run(&p, c, r, 1, 3), 1); // /dev/null read
        assert_eq!(run(&p, c, w, 1, 3), 0); // write denied by the last rule
        assert_eq!(run(&p, c, r | w, 1, 3), 0);
        assert_eq!(run(&p, c, r | w, 136, 7), 1); // any pty
        assert_eq!(run(&p, c, m, 136, 7), 0); // but no mknod
        assert_eq!(run(&p, b, r, 8, 0), 1);
        assert_eq!(run(&p, b, r | w, 8, 0), 0);
        assert_eq!(run(&p, c, r, 1, 5), 0); // not listed: the deny-all
        assert_eq!(run(&p, b, r, 1, 3), 0); // block 1:3 is not char 1:3

        // no rules: everything allowed (v2 default)
        let p = program(&[]);
        assert_eq!(run(&p, c, r | w | m, 4, 4), 1);
        // allow-all after deny-all
        let p = program(&[
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'a', None, None, "rwm"),
        ]);
        assert_eq!(run(&p, b, w, 8, 1), 1);
    }
}
