//! A tiny classic-BPF assembler with symbolic forward labels.
//!
//! Conditional jumps in classic BPF carry 8-bit offsets; the generator writes jumps to
//! labels and the assembler lays them out, turning any conditional jump whose target is
//! more than 255 instructions away into a short conditional jump over unconditional
//! `ja` trampolines (32-bit offsets). Only forward jumps exist in BPF.

use super::SeccompError;

/// One instruction of the kernel's filter ABI (`struct sock_filter`).
pub type Insn = libc::sock_filter;

/// Kernel limit on the length of one filter program (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;

// Opcodes (linux/filter.h, linux/bpf_common.h).
const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_ALU: u16 = 0x04;
const BPF_AND: u16 = 0x50;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_K: u16 = 0x00;
pub const LD_W_ABS: u16 = BPF_LD | BPF_W | BPF_ABS;
pub const ALU_AND_K: u16 = BPF_ALU | BPF_AND | BPF_K;
pub const RET_K: u16 = BPF_RET | BPF_K;
pub const JA: u16 = BPF_JMP; // | BPF_JA (0)
pub const JEQ_K: u16 = BPF_JMP | 0x10 | BPF_K;
pub const JGT_K: u16 = BPF_JMP | 0x20 | BPF_K;
pub const JGE_K: u16 = BPF_JMP | 0x30 | BPF_K;
pub const JSET_K: u16 = BPF_JMP | 0x40 | BPF_K;

/// A forward jump target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

#[derive(Clone, Copy, Debug)]
enum Item {
    /// A non-jump instruction.
    Stmt { code: u16, k: u32 },
    /// A conditional jump; `None` means "fall through to the next instruction".
    Jump {
        code: u16,
        k: u32,
        jt: Option<Label>,
        jf: Option<Label>,
    },
    /// An unconditional jump.
    Ja(Label),
    /// Binds a label to the position of the next instruction.
    Bind(Label),
}

/// A program under construction.
#[derive(Default)]
pub struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    pub fn bind(&mut self, l: Label) {
        self.items.push(Item::Bind(l));
    }

    pub fn stmt(&mut self, code: u16, k: u32) {
        self.items.push(Item::Stmt { code, k });
    }

    pub fn ret(&mut self, action: u32) {
        self.stmt(RET_K, action);
    }

    pub fn load(&mut self, offset: u32) {
        self.stmt(LD_W_ABS, offset);
    }

    pub fn jump(&mut self, code: u16, k: u32, jt: Option<Label>, jf: Option<Label>) {
        self.items.push(Item::Jump { code, k, jt, jf });
    }

    pub fn ja(&mut self, l: Label) {
        self.items.push(Item::Ja(l));
    }

    /// Lays the program out and resolves every label.
    pub fn assemble(&self) -> Result<Vec<Insn>, SeccompError> {
        let n = self.items.len();
        let mut expanded = vec![false; n];
        loop {
            // Positions of every item and label under the current expansion choice.
            let mut pos = vec![0usize; n + 1];
            let mut label_pos = vec![usize::MAX; self.labels];
            let mut p = 0usize;
            for (i, item) in self.items.iter().enumerate() {
                pos[i] = p;
                p += match item {
                    Item::Stmt { .. } | Item::Ja(_) => 1,
                    Item::Jump { .. } => {
                        if expanded[i] {
                            3
                        } else {
                            1
                        }
                    }
                    Item::Bind(l) => {
                        label_pos[l.0] = p;
                        0
                    }
                };
            }
            pos[n] = p;
            let target = |l: Option<Label>, end: usize| -> Result<usize, SeccompError> {
                match l {
                    None => Ok(end),
                    Some(l) => match label_pos.get(l.0) {
                        Some(&t) if t != usize::MAX => Ok(t),
                        _ => Err(SeccompError::Internal(format!("unbound BPF label {}", l.0))),
                    },
                }
            };

            // Find jumps that do not fit in 8 bits.
            let mut changed = false;
            for (i, item) in self.items.iter().enumerate() {
                if let Item::Jump { jt, jf, .. } = item {
                    if expanded[i] {
                        continue;
                    }
                    let end = pos[i] + 1;
                    let t = target(*jt, end)?;
                    let f = target(*jf, end)?;
                    if t < end || f < end {
                        return Err(SeccompError::Internal("backward BPF jump".into()));
                    }
                    if t - end > 255 || f - end > 255 {
                        expanded[i] = true;
                        changed = true;
                    }
                }
            }
            if changed {
                continue;
            }

            // Emit.
            let mut out = Vec::with_capacity(p);
            for (i, item) in self.items.iter().enumerate() {
                match *item {
                    Item::Stmt { code, k } => out.push(insn(code, 0, 0, k)),
                    Item::Bind(_) => {}
                    Item::Ja(l) => {
                        let t = target(Some(l), pos[i] + 1)?;
                        let off = t
                            .checked_sub(pos[i] + 1)
                            .ok_or_else(|| SeccompError::Internal("backward BPF ja".into()))?;
                        out.push(insn(JA, 0, 0, off as u32));
                    }
                    Item::Jump { code, k, jt, jf } => {
                        if expanded[i] {
                            // j k, 0, 1 ; ja T ; ja F   (targets measured from the end
                            // of the three-instruction sequence)
                            let end = pos[i] + 3;
                            let t = target(jt, end)?;
                            let f = target(jf, end)?;
                            out.push(insn(code, 0, 1, k));
                            out.push(insn(JA, 0, 0, (t - (pos[i] + 2)) as u32));
                            out.push(insn(JA, 0, 0, (f - (pos[i] + 3)) as u32));
                        } else {
                            let end = pos[i] + 1;
                            let t = target(jt, end)? - end;
                            let f = target(jf, end)? - end;
                            out.push(insn(code, t as u8, f as u8, k));
                        }
                    }
                }
            }
            if out.len() > MAX_INSNS {
                return Err(SeccompError::TooLong { len: out.len() });
            }
            return Ok(out);
        }
    }
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// Runs a program against one `seccomp_data` the way the kernel does, for unit tests and
/// for validating cache files. Returns the action value, or None if the program is
/// malformed (falls off the end, bad opcode, out-of-range load or jump).
pub fn interpret(prog: &[Insn], nr: u32, arch: u32, args: [u64; 6]) -> Option<u32> {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    loop {
        let ins = prog.get(pc)?;
        pc += 1;
        match ins.code {
            LD_W_ABS => {
                let o = ins.k as usize;
                let b = data.get(o..o + 4)?;
                acc = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            }
            ALU_AND_K => acc &= ins.k,
            RET_K => return Some(ins.k),
            JA => pc = pc.checked_add(ins.k as usize)?,
            JEQ_K | JGT_K | JGE_K | JSET_K => {
                let cond = match ins.code {
                    JEQ_K => acc == ins.k,
                    JGT_K => acc > ins.k,
                    JGE_K => acc >= ins.k,
                    _ => acc & ins.k != 0,
                };
                pc += if cond { ins.jt } else { ins.jf } as usize;
            }
            _ => return None,
        }
    }
}

/// Structural check of a program read back from disk: every instruction is one this
/// generator emits, every jump lands inside the program and the last instruction is a
/// return.
pub fn validate(prog: &[Insn]) -> bool {
    if prog.is_empty() || prog.len() > MAX_INSNS {
        return false;
    }
    let len = prog.len();
    for (i, ins) in prog.iter().enumerate() {
        let next = i + 1;
        let ok = match ins.code {
            LD_W_ABS => ins.k < 64 && ins.k % 4 == 0,
            ALU_AND_K | RET_K => true,
            JA => next + (ins.k as usize) < len,
            JEQ_K | JGT_K | JGE_K | JSET_K => {
                next + (ins.jt as usize) < len && next + (ins.jf as usize) < len
            }
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    prog[len - 1].code == RET_K
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_jumps_are_expanded() {
        let mut a = Asm::new();
        let far = a.label();
        a.load(0);
        a.jump(JEQ_K, 7, Some(far), None);
        for _ in 0..300 {
            a.ret(1);
        }
        a.bind(far);
        a.ret(2);
        let p = a.assemble().unwrap();
        assert!(validate(&p));
        assert_eq!(interpret(&p, 7, 0, [0; 6]), Some(2));
        assert_eq!(interpret(&p, 8, 0, [0; 6]), Some(1));
    }
}
