//! `%XX` decoding of the stdio URIs containerd hands the shim (`binary://`, `file://`,
//! `crilog://`); its own module so that crilog.rs and its fuzz target need nothing else.

/// Decodes `%XX` escapes; anything else (a lone `%`, bad hex) is kept as it is.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
