//! hack/mkbundle.sh's config.json is the document `husk spec` writes (hostname "husk", not
//! runc's), made non-interactive: process.terminal false and args ["sh"]. The demo's container
//! greets from husk because of it.
use std::path::Path;
use std::process::Command;

const HUSK: &str = env!("CARGO_BIN_EXE_husk");

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn mkbundle_config_is_husk_spec() {
    let tmp = tempfile::Builder::new()
        .prefix("husk-mkbundle-")
        .tempdir()
        .expect("tempdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/mkbundle.sh");
    let bundle = tmp.path().join("bundle");
    let out = Command::new("sh")
        .arg(&script)
        .arg(&bundle)
        .env("HUSK", HUSK)
        .env_remove("RUNTIME")
        .output()
        .expect("run hack/mkbundle.sh");
    assert!(
        out.status.success(),
        "hack/mkbundle.sh (needs busybox-static and jq): {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let spec_dir = tmp.path().join("spec");
    std::fs::create_dir(&spec_dir).expect("mkdir");
    let st = Command::new(HUSK)
        .arg("spec")
        .current_dir(&spec_dir)
        .status()
        .expect("husk spec");
    assert!(st.success());
    let mut want = read_json(&spec_dir.join("config.json"));
    want["process"]["terminal"] = serde_json::json!(false);
    want["process"]["args"] = serde_json::json!(["sh"]);

    let got = read_json(&bundle.join("config.json"));
    assert_eq!(got, want);
    assert_eq!(got["hostname"], "husk");
    assert_eq!(got, {
        let mut d = husk::spec::default_spec(false);
        d["process"]["terminal"] = serde_json::json!(false);
        d
    });
    let sh = bundle.join("rootfs/bin/sh");
    assert!(sh.symlink_metadata().is_ok(), "{} missing", sh.display());
}
