//! The host's CPU, shared by `builder` and `runtime`: instruction sets (what this CPU offers,
//! read from CPUID with the OS's consent through XCR0; what this binary was compiled to use),
//! the x86-64 micro-architecture levels, the cores available for compute, and the log filter
//! both binaries read from their environment (`logging`).
//!
//! Detection reads CPUID directly: `is_x86_feature_detected!` answers `true` at compile time for
//! features the binary was built with, so it cannot tell whether the CPU really has them.

use std::collections::BTreeSet;

mod cores;
mod detect;
pub mod logging;

pub use cores::{compute_cores, core_budget, CoreBudget};
pub use detect::{detect, CpuInfo};

/// Which register state the OS must save (XCR0) before a feature is usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OsState {
    None,
    /// XMM + YMM (XCR0 bits 1, 2).
    Avx,
    /// AVX state + opmask, ZMM_Hi256, Hi16_ZMM (bits 5, 6, 7).
    Avx512,
    /// XTILECFG + XTILEDATA (bits 17, 18).
    Amx,
}

/// An instruction set we report on.
#[derive(Clone, Copy, Debug)]
pub struct Feature {
    /// As printed: `AVX2`, `AVX512F`...
    pub name: &'static str,
    /// rustc's `-C target-feature` name; `None` for sets we only report.
    pub rustc: Option<&'static str>,
    pub os: OsState,
}

const fn f(name: &'static str, rustc: Option<&'static str>, os: OsState) -> Feature {
    Feature { name, rustc, os }
}

/// Everything we detect, in a stable order (the order of reports and flags).
pub const FEATURES: &[Feature] = &[
    f("SSE3", Some("sse3"), OsState::None),
    f("SSSE3", Some("ssse3"), OsState::None),
    f("SSE4.1", Some("sse4.1"), OsState::None),
    f("SSE4.2", Some("sse4.2"), OsState::None),
    f("POPCNT", Some("popcnt"), OsState::None),
    f("CX16", Some("cmpxchg16b"), OsState::None),
    // rustc's `lahfsahf` is unstable (a warning, and no cfg to check at start-up); the x86-64-v2+
    // target CPUs let LLVM use LAHF/SAHF anyway. Reported only.
    f("LAHF", None, OsState::None),
    f("AVX", Some("avx"), OsState::Avx),
    f("AVX2", Some("avx2"), OsState::Avx),
    f("FMA", Some("fma"), OsState::Avx),
    f("F16C", Some("f16c"), OsState::Avx),
    f("BMI1", Some("bmi1"), OsState::None),
    f("BMI2", Some("bmi2"), OsState::None),
    f("LZCNT", Some("lzcnt"), OsState::None),
    f("MOVBE", Some("movbe"), OsState::None),
    f("XSAVE", Some("xsave"), OsState::None),
    f("AVX512F", Some("avx512f"), OsState::Avx512),
    f("AVX512CD", Some("avx512cd"), OsState::Avx512),
    f("AVX512BW", Some("avx512bw"), OsState::Avx512),
    f("AVX512DQ", Some("avx512dq"), OsState::Avx512),
    f("AVX512VL", Some("avx512vl"), OsState::Avx512),
    f("AVX512VNNI", Some("avx512vnni"), OsState::Avx512),
    f("AVX512BF16", Some("avx512bf16"), OsState::Avx512),
    f("AVX512VBMI", Some("avx512vbmi"), OsState::Avx512),
    f("AVX-VNNI", Some("avxvnni"), OsState::Avx),
    // AMX needs a per-process permission request (arch_prctl) before use; reported only.
    f("AMX-TILE", None, OsState::Amx),
    f("AMX-BF16", None, OsState::Amx),
    f("AMX-INT8", None, OsState::Amx),
];

/// The x86-64 micro-architecture levels (psABI), as feature names from [`FEATURES`].
const LEVEL_2: &[&str] = &[
    "CX16", "LAHF", "POPCNT", "SSE3", "SSE4.1", "SSE4.2", "SSSE3",
];
const LEVEL_3: &[&str] = &[
    "AVX", "AVX2", "BMI1", "BMI2", "F16C", "FMA", "LZCNT", "MOVBE", "XSAVE",
];
const LEVEL_4: &[&str] = &["AVX512F", "AVX512BW", "AVX512CD", "AVX512DQ", "AVX512VL"];

/// The features a level requires (all lower levels included).
pub fn level_features(level: u8) -> Vec<&'static str> {
    let mut all = Vec::new();
    for (l, names) in [(2, LEVEL_2), (3, LEVEL_3), (4, LEVEL_4)] {
        if level >= l {
            all.extend_from_slice(names);
        }
    }
    all
}

/// The highest x86-64 level whose features are all in `have` (1 = baseline x86-64).
pub fn x86_64_level(have: &BTreeSet<&'static str>) -> u8 {
    let mut level = 1;
    for (l, names) in [(2, LEVEL_2), (3, LEVEL_3), (4, LEVEL_4)] {
        if names.iter().all(|n| have.contains(n)) {
            level = l;
        } else {
            break;
        }
    }
    level
}

/// The features this binary was compiled to use (beyond baseline x86-64), by display name.
pub fn compiled_features() -> BTreeSet<&'static str> {
    macro_rules! compiled {
        ($($name:literal => $feat:literal),* $(,)?) => {{
            let mut set = BTreeSet::new();
            $(if cfg!(target_feature = $feat) { set.insert($name); })*
            set
        }};
    }
    compiled!(
        "SSE3" => "sse3", "SSSE3" => "ssse3", "SSE4.1" => "sse4.1", "SSE4.2" => "sse4.2",
        "POPCNT" => "popcnt", "CX16" => "cmpxchg16b", "AVX" => "avx",
        "AVX2" => "avx2", "FMA" => "fma", "F16C" => "f16c", "BMI1" => "bmi1", "BMI2" => "bmi2",
        "LZCNT" => "lzcnt", "MOVBE" => "movbe", "XSAVE" => "xsave", "AVX512F" => "avx512f",
        "AVX512CD" => "avx512cd", "AVX512BW" => "avx512bw", "AVX512DQ" => "avx512dq",
        "AVX512VL" => "avx512vl", "AVX512VNNI" => "avx512vnni", "AVX512BF16" => "avx512bf16",
        "AVX512VBMI" => "avx512vbmi", "AVX-VNNI" => "avxvnni",
    )
}

/// Features, in [`FEATURES`] order, that are in `a` but not in `b`.
pub fn missing_from<'a>(a: &BTreeSet<&'a str>, b: &BTreeSet<&'a str>) -> Vec<&'a str> {
    FEATURES
        .iter()
        .map(|f| f.name)
        .filter(|n| a.contains(n) && !b.contains(n))
        .collect()
}

/// The start-up check of the runtime: `Err` with the message to exit on when the CPU lacks what
/// the binary was compiled for; `Ok(Some(note))` when the CPU offers more than the binary uses.
pub fn startup_check(
    cpu: &CpuInfo,
    compiled: &BTreeSet<&'static str>,
) -> Result<Option<String>, String> {
    if !cpu.x86_64 {
        return Ok(None);
    }
    let lacking = missing_from(compiled, &cpu.usable);
    if !lacking.is_empty() {
        return Err(format!(
            "this runtime was compiled for instructions this CPU ({}) does not offer: {}. \
             It would die of SIGILL. Run an image built for this CPU (builder devel && builder serve-image) \
             or a portable one (builder devel --target-cpu portable)",
            if cpu.brand.is_empty() { "unknown" } else { &cpu.brand },
            lacking.join(" ")
        ));
    }
    let unused: Vec<&str> = missing_from(&cpu.usable, compiled)
        .into_iter()
        .filter(|n| FEATURES.iter().any(|f| f.name == *n && f.rustc.is_some()))
        .collect();
    Ok((!unused.is_empty()).then(|| {
        format!(
            "Your CPU supports instructions that this binary was not compiled to use: {}",
            unused.join(" ")
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// std's runtime detection (it honours XCR0 too). It answers `true` at compile time for
    /// features the test binary was built with, which on this same machine is also the truth.
    #[cfg(target_arch = "x86_64")]
    fn std_detects(name: &str) -> Option<bool> {
        Some(match name {
            "SSE3" => is_x86_feature_detected!("sse3"),
            "SSSE3" => is_x86_feature_detected!("ssse3"),
            "SSE4.1" => is_x86_feature_detected!("sse4.1"),
            "SSE4.2" => is_x86_feature_detected!("sse4.2"),
            "POPCNT" => is_x86_feature_detected!("popcnt"),
            "CX16" => is_x86_feature_detected!("cmpxchg16b"),
            "AVX" => is_x86_feature_detected!("avx"),
            "AVX2" => is_x86_feature_detected!("avx2"),
            "FMA" => is_x86_feature_detected!("fma"),
            "F16C" => is_x86_feature_detected!("f16c"),
            "BMI1" => is_x86_feature_detected!("bmi1"),
            "BMI2" => is_x86_feature_detected!("bmi2"),
            "LZCNT" => is_x86_feature_detected!("lzcnt"),
            "MOVBE" => is_x86_feature_detected!("movbe"),
            "XSAVE" => is_x86_feature_detected!("xsave"),
            "AVX512F" => is_x86_feature_detected!("avx512f"),
            "AVX512CD" => is_x86_feature_detected!("avx512cd"),
            "AVX512BW" => is_x86_feature_detected!("avx512bw"),
            "AVX512DQ" => is_x86_feature_detected!("avx512dq"),
            "AVX512VL" => is_x86_feature_detected!("avx512vl"),
            "AVX512VNNI" => is_x86_feature_detected!("avx512vnni"),
            "AVX512BF16" => is_x86_feature_detected!("avx512bf16"),
            "AVX512VBMI" => is_x86_feature_detected!("avx512vbmi"),
            "AVX-VNNI" => is_x86_feature_detected!("avxvnni"),
            _ => return None,
        })
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn detection_agrees_with_std() {
        let cpu = detect();
        assert!(cpu.x86_64);
        assert!(!cpu.vendor.is_empty());
        let mut compared = 0;
        for feature in FEATURES {
            if let Some(std) = std_detects(feature.name) {
                assert_eq!(
                    cpu.usable.contains(feature.name),
                    std,
                    "{} disagrees with std",
                    feature.name
                );
                compared += 1;
            }
        }
        assert!(compared >= 20);
        assert!(
            cpu.usable.contains("SSE3"),
            "every x86-64 CPU this decade has SSE3"
        );
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn detection_agrees_with_proc_cpuinfo() {
        let Ok(text) = std::fs::read_to_string("/proc/cpuinfo") else {
            panic!("/proc/cpuinfo is unreadable on this Linux host");
        };
        let flags: BTreeSet<&str> = text
            .lines()
            .find(|l| l.starts_with("flags"))
            .and_then(|l| l.split(':').nth(1))
            .map(|f| f.split_whitespace().collect())
            .unwrap_or_default();
        let cpu = detect();
        for (ours, kernel) in [
            ("SSE3", "pni"),
            ("SSSE3", "ssse3"),
            ("SSE4.1", "sse4_1"),
            ("SSE4.2", "sse4_2"),
            ("POPCNT", "popcnt"),
            ("AVX", "avx"),
            ("AVX2", "avx2"),
            ("FMA", "fma"),
            ("F16C", "f16c"),
            ("BMI1", "bmi1"),
            ("BMI2", "bmi2"),
            ("MOVBE", "movbe"),
            ("AVX512F", "avx512f"),
            ("AVX512BW", "avx512bw"),
            ("AVX512VL", "avx512vl"),
            ("AVX512VNNI", "avx512_vnni"),
            ("AVX512BF16", "avx512_bf16"),
            ("AVX512VBMI", "avx512vbmi"),
        ] {
            assert_eq!(
                cpu.usable.contains(ours),
                flags.contains(kernel),
                "{ours} vs /proc/cpuinfo flag {kernel}"
            );
        }
    }

    fn set(names: &[&'static str]) -> BTreeSet<&'static str> {
        names.iter().copied().collect()
    }

    #[test]
    fn levels() {
        assert_eq!(x86_64_level(&set(&[])), 1);
        assert_eq!(x86_64_level(&set(LEVEL_2)), 2);
        let v3: Vec<&str> = level_features(3);
        assert_eq!(x86_64_level(&v3.iter().copied().collect()), 3);
        let v4: BTreeSet<&str> = level_features(4).into_iter().collect();
        assert_eq!(x86_64_level(&v4), 4);
        // AVX-512 without the level-3 set is not level 4.
        assert_eq!(x86_64_level(&set(LEVEL_4)), 1);
    }

    #[test]
    fn startup_check_refuses_missing_and_notes_unused() {
        let cpu = CpuInfo {
            x86_64: true,
            brand: "Test CPU".into(),
            usable: level_features(3).into_iter().collect(),
            ..Default::default()
        };
        let err = startup_check(&cpu, &level_features(4).into_iter().collect()).unwrap_err();
        assert!(
            err.contains("AVX512F AVX512CD AVX512BW AVX512DQ AVX512VL") && err.contains("Test CPU"),
            "{err}"
        );
        assert!(err.contains("--target-cpu portable"), "{err}");
        let note = startup_check(&cpu, &set(LEVEL_2)).unwrap().unwrap();
        assert!(note.starts_with("Your CPU supports instructions that this binary was not compiled to use: AVX AVX2 FMA"), "{note}");
        assert_eq!(
            startup_check(&cpu, &level_features(3).into_iter().collect()),
            Ok(None)
        );
        assert_eq!(
            startup_check(&CpuInfo::default(), &set(LEVEL_4)),
            Ok(None),
            "non-x86: nothing to say"
        );
    }
}
