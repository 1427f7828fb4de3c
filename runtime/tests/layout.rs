//! The layout's rules, kept: no import circle between rooms or modules, and nothing below the
//! protocols (`rest`, `grpc`) imports one (scripts/check_imports.py, which prints the arrows).

use std::process::Command;

#[test]
fn no_import_circles_and_protocols_stay_at_the_edge() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(dir.join("../scripts/check_imports.py"))
        .arg(dir.join("src"))
        .output()
        .expect("python3 runs scripts/check_imports.py");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("0 room circle(s), 0 module circle(s)"),
        "{report}"
    );
}
