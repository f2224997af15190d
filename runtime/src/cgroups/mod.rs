//! cgroups: v1 and v2 behind one interface (filled in by the cgroups work).
