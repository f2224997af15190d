//! v1 → v2 value translations (the OCI spec is written in cgroup v1 terms).

use super::CgroupError;

/// cpu.shares [2, 262144] → cpu.weight [1, 10000], 0 meaning "unset".
///
/// The mapping current runc/crun use: a quadratic in log2(shares) that maps the minimum, the default and
/// the maximum exactly (2 → 1, 1024 → 100, 262144 → 10000), unlike the older linear formula which mapped
/// the default 1024 shares to weight 39.
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    if shares <= 2 {
        return 1;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    10f64.powf(exponent).ceil() as u64
}

/// blkio.weight [10, 1000] → io.weight [1, 10000], 0 meaning "unset".
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    let w = u64::from(weight.max(10));
    1 + (w - 10) * 9999 / 990
}

/// The spec's `memory.swap` is memory+swap (v1 memsw); v2's memory.swap.max is swap alone.
///
/// Returns the memory.swap.max value: -1 = "max", 0 = unset (don't write) unless both limits are equal
/// (then `Some(0)` disables swap), else `swap - limit`. `None` means nothing to write.
pub fn memory_swap_to_v2(swap: i64, limit: i64) -> Result<Option<i64>, CgroupError> {
    let bad = |detail: String| CgroupError::InvalidValue {
        field: "linux.resources.memory.swap".into(),
        detail,
    };
    if limit == -1 && swap == 0 {
        // memory set to unlimited, swap not given: both unlimited (v1 compatibility)
        return Ok(Some(-1));
    }
    if swap == -1 {
        return Ok(Some(-1));
    }
    if swap == 0 {
        return Ok(None);
    }
    if swap < -1 {
        return Err(bad(format!("{swap} is not a valid memory+swap limit")));
    }
    if limit == 0 || limit == -1 {
        return Err(bad(format!(
            "memory+swap limit {swap} needs a memory limit (memory.limit is {limit})"
        )));
    }
    if limit < 0 {
        return Err(bad(format!("invalid memory limit {limit}")));
    }
    if swap < limit {
        return Err(bad(format!(
            "memory+swap limit {swap} is lower than the memory limit {limit}"
        )));
    }
    Ok(Some(swap - limit))
}

/// "-1"/"max" style: negative → "max", else the number.
pub(crate) fn v2_num(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_to_weight() {
        assert_eq!(cpu_shares_to_weight(0), 0);
        assert_eq!(cpu_shares_to_weight(1), 1);
        assert_eq!(cpu_shares_to_weight(2), 1);
        assert_eq!(cpu_shares_to_weight(1024), 100);
        assert_eq!(cpu_shares_to_weight(262_144), 10_000);
        assert_eq!(cpu_shares_to_weight(1_000_000), 10_000);
        // monotonic over the whole range
        let mut prev = 0;
        for s in (2..262_144).step_by(97) {
            let w = cpu_shares_to_weight(s);
            assert!(w >= prev && (1..=10_000).contains(&w), "{s} -> {w}");
            prev = w;
        }
        // half and double the default land either side of 100
        assert!(cpu_shares_to_weight(512) < 100 && cpu_shares_to_weight(2048) > 100);
    }

    #[test]
    fn blkio_to_io() {
        assert_eq!(blkio_weight_to_io_weight(0), 0);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(500), 1 + 490 * 9999 / 990);
    }

    #[test]
    fn swap_translation() {
        assert_eq!(memory_swap_to_v2(0, -1).unwrap(), Some(-1));
        assert_eq!(memory_swap_to_v2(-1, 100).unwrap(), Some(-1));
        assert_eq!(memory_swap_to_v2(0, 100).unwrap(), None);
        assert_eq!(memory_swap_to_v2(300, 100).unwrap(), Some(200));
        assert_eq!(memory_swap_to_v2(100, 100).unwrap(), Some(0));
        let e = memory_swap_to_v2(50, 100).unwrap_err().to_string();
        assert!(e.contains("lower than the memory limit"), "{e}");
        assert!(memory_swap_to_v2(50, 0).is_err());
        assert!(memory_swap_to_v2(50, -1).is_err());
        assert!(memory_swap_to_v2(-5, 10).is_err());
    }
}
