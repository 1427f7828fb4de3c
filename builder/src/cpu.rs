//! `builder cpu`: the host's CPU, what an optimized build will use, and the rustc flags for it.

use crate::hostcpu::{self as cpu, CpuInfo, FEATURES};
use serde_json::json;

/// What to compile `runtime` for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetCpu {
    /// Every instruction set this host offers (and its OS enables).
    Native,
    /// Baseline x86-64: runs on any x86-64 CPU.
    Portable,
    /// An x86-64 micro-architecture level, 2 to 4.
    Level(u8),
    /// A CPU name rustc knows (`skylake`, `znver4`, ...).
    Named(String),
}

impl TargetCpu {
    pub fn parse(s: &str) -> Result<TargetCpu, String> {
        Ok(match s {
            "native" => TargetCpu::Native,
            "portable" | "x86-64" | "x86-64-v1" => TargetCpu::Portable,
            "x86-64-v2" | "v2" => TargetCpu::Level(2),
            "x86-64-v3" | "v3" => TargetCpu::Level(3),
            "x86-64-v4" | "v4" => TargetCpu::Level(4),
            other if !other.is_empty() && other.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {
                TargetCpu::Named(other.to_string())
            }
            other => return Err(format!("'{other}' is not a CPU target; use native, portable, x86-64-v2, x86-64-v3, x86-64-v4 or a rustc CPU name")),
        })
    }

    /// Short form for tags and labels.
    pub fn name(&self) -> String {
        match self {
            TargetCpu::Native => "native".into(),
            TargetCpu::Portable => "portable".into(),
            TargetCpu::Level(l) => format!("x86-64-v{l}"),
            TargetCpu::Named(n) => n.clone(),
        }
    }
}

/// What a build for a target will use.
#[derive(Clone, Debug)]
pub struct BuildPlan {
    pub target: TargetCpu,
    /// `RUSTFLAGS` for the devel image's cargo build (empty for a portable build).
    pub rustflags: String,
    /// Instruction sets the binary will require, when we know them (not for named CPUs).
    pub required: Vec<&'static str>,
    pub level: u8,
}

/// Flags for `target` on a host with `cpu`. Native lists each feature explicitly (on top of the
/// level's `target-cpu`) so the image records exactly what it requires.
pub fn build_plan(target: &TargetCpu, cpu: &CpuInfo) -> BuildPlan {
    let (flags, required, level) = match target {
        TargetCpu::Portable => (String::new(), Vec::new(), 1),
        TargetCpu::Level(l) => (
            format!("-C target-cpu=x86-64-v{l}"),
            cpu::level_features(*l),
            *l,
        ),
        TargetCpu::Named(n) => (format!("-C target-cpu={n}"), Vec::new(), 0),
        TargetCpu::Native if !cpu.x86_64 => (String::new(), Vec::new(), 1),
        TargetCpu::Native => {
            let level = cpu.level();
            let required: Vec<&'static str> = FEATURES
                .iter()
                .filter(|f| f.rustc.is_some() && cpu.usable.contains(f.name))
                .map(|f| f.name)
                .collect();
            // Every stable feature named, not only those beyond the level, so the flags say
            // exactly what the binary may use (and its start-up check can verify each).
            let features: Vec<String> = FEATURES
                .iter()
                .filter(|f| cpu.usable.contains(f.name))
                .filter_map(|f| f.rustc.map(|r| format!("+{r}")))
                .collect();
            let mut flags = if level > 1 {
                format!("-C target-cpu=x86-64-v{level}")
            } else {
                String::new()
            };
            if !features.is_empty() {
                flags = format!("{flags} -C target-feature={}", features.join(","))
                    .trim()
                    .to_string();
            }
            (flags, required, level)
        }
    };
    // Linked against glibc dynamically: onnxruntime's library is dlopen'ed, which a static
    // (+crt-static) binary cannot do; the serving image carries the glibc files it needs.
    let rustflags = flags.trim().to_string();
    BuildPlan {
        target: target.clone(),
        rustflags,
        required,
        level,
    }
}

pub struct HostReport {
    pub cpu: CpuInfo,
    pub logical_cores: usize,
    pub physical_cores: Option<usize>,
    pub memory_bytes: u64,
}

pub fn host_report() -> HostReport {
    let memory_bytes = sysinfo::System::new().map_or(0, |mut sys| {
        sys.refresh_memory();
        sys.total_memory()
    });
    HostReport {
        cpu: cpu::detect(),
        logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        physical_cores: sysinfo::System::physical_core_count().ok(),
        memory_bytes,
    }
}

impl HostReport {
    pub fn to_json(&self) -> serde_json::Value {
        let native = build_plan(&TargetCpu::Native, &self.cpu);
        let portable_misses = self.not_in_portable();
        json!({
            "vendor": self.cpu.vendor,
            "brand": self.cpu.brand,
            "family": self.cpu.family,
            "model": self.cpu.model,
            "x86_64": self.cpu.x86_64,
            "logical_cores": self.logical_cores,
            "physical_cores": self.physical_cores,
            "memory_bytes": self.memory_bytes,
            "instruction_sets": self.cpu.usable.iter().collect::<Vec<_>>(),
            "disabled_by_os": self.cpu.disabled_by_os.iter().collect::<Vec<_>>(),
            "x86_64_level": self.cpu.level(),
            "optimized_rustflags": native.rustflags,
            "portable_rustflags": build_plan(&TargetCpu::Portable, &self.cpu).rustflags,
            "not_used_by_portable_build": portable_misses,
        })
    }

    /// Instruction sets the optimized build uses that a portable one does not.
    pub fn not_in_portable(&self) -> Vec<&'static str> {
        build_plan(&TargetCpu::Native, &self.cpu).required
    }

    pub fn render(&self) -> String {
        let cpu = &self.cpu;
        let mut out = String::new();
        let gib = self.memory_bytes as f64 / (1u64 << 30) as f64;
        out.push_str(&format!(
            "CPU:            {} ({})\n",
            or_unknown(&cpu.brand),
            or_unknown(&cpu.vendor)
        ));
        if !cpu.x86_64 {
            out.push_str("Architecture:   not x86-64: builds fall back to portable (no CPU-specific flags)\n");
        }
        out.push_str(&format!("Family/model:   {}/{}\n", cpu.family, cpu.model));
        out.push_str(&format!(
            "Cores:          {} logical, {} physical\n",
            self.logical_cores,
            self.physical_cores
                .map_or("unknown".into(), |n| n.to_string())
        ));
        out.push_str(&format!("Memory:         {gib:.1} GiB\n"));
        out.push_str(&format!("x86-64 level:   v{}\n", cpu.level()));
        out.push_str("Instruction sets (CPU has them and the OS enables them):\n");
        for chunk in cpu.usable.iter().copied().collect::<Vec<_>>().chunks(10) {
            out.push_str(&format!("  {}\n", chunk.join(" ")));
        }
        if !cpu.disabled_by_os.is_empty() {
            out.push_str(&format!(
                "In the CPU but disabled by the OS (XCR0), not used: {}\n",
                cpu.disabled_by_os
                    .iter()
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        let native = build_plan(&TargetCpu::Native, cpu);
        let shown = |flags: String| {
            if flags.is_empty() {
                "(none: baseline x86-64)".to_string()
            } else {
                flags
            }
        };
        out.push_str(&format!(
            "Optimized build RUSTFLAGS: {}\n",
            shown(native.rustflags)
        ));
        out.push_str(&format!(
            "Portable build RUSTFLAGS:  {}\n",
            shown(build_plan(&TargetCpu::Portable, cpu).rustflags)
        ));
        let misses = self.not_in_portable();
        if misses.is_empty() {
            out.push_str("A portable build already uses everything this CPU offers.\n");
        } else {
            out.push_str(&format!(
                "Your CPU supports instructions that a portable binary is not compiled to use: {}\n",
                misses.join(" ")
            ));
        }
        out
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "unknown"
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn cpu_with(level: u8, extra: &[&'static str]) -> CpuInfo {
        let mut usable: BTreeSet<&'static str> = cpu::level_features(level).into_iter().collect();
        usable.extend(extra);
        CpuInfo {
            x86_64: true,
            usable,
            ..Default::default()
        }
    }

    #[test]
    fn native_flags_list_the_level_and_the_extras() {
        let plan = build_plan(
            &TargetCpu::Native,
            &cpu_with(4, &["AVX512VNNI", "AMX-TILE"]),
        );
        let flags = &plan.rustflags;
        assert!(
            flags.starts_with("-C target-cpu=x86-64-v4 -C target-feature=+sse3,+ssse3,"),
            "{flags}"
        );
        assert!(
            flags.contains(",+cmpxchg16b,") && flags.split(',').any(|f| f == "+avx512vnni"),
            "{flags}"
        );
        assert!(!flags.contains("crt-static"), "dynamically linked: {flags}");
        assert!(
            !flags.contains("amx") && !flags.contains("lahfsahf"),
            "unstable rustc features (AMX, LAHF) are reported, never compiled for: {flags}"
        );
        assert!(plan.required.contains(&"AVX512VNNI") && plan.required.contains(&"AVX2"));
        assert!(!plan.required.contains(&"AMX-TILE"));
        assert_eq!(plan.level, 4);
        let plan = build_plan(&TargetCpu::Native, &cpu_with(3, &[]));
        assert!(
            plan.rustflags.contains("+fma") && !plan.rustflags.contains("avx512"),
            "{}",
            plan.rustflags
        );
    }

    #[test]
    fn portable_levels_and_names() {
        let cpu = cpu_with(4, &[]);
        assert_eq!(build_plan(&TargetCpu::Portable, &cpu).rustflags, "");
        assert!(build_plan(&TargetCpu::Portable, &cpu).required.is_empty());
        let v3 = build_plan(&TargetCpu::Level(3), &cpu);
        assert_eq!(v3.rustflags, "-C target-cpu=x86-64-v3");
        assert!(v3.required.contains(&"FMA") && !v3.required.contains(&"AVX512F"));
        assert_eq!(
            build_plan(&TargetCpu::Named("znver4".into()), &cpu).rustflags,
            "-C target-cpu=znver4"
        );
        let non_x86 = CpuInfo::default();
        assert_eq!(build_plan(&TargetCpu::Native, &non_x86).rustflags, "");
    }

    #[test]
    fn target_names_parse() {
        assert_eq!(TargetCpu::parse("native"), Ok(TargetCpu::Native));
        assert_eq!(TargetCpu::parse("portable"), Ok(TargetCpu::Portable));
        assert_eq!(TargetCpu::parse("x86-64-v3"), Ok(TargetCpu::Level(3)));
        assert_eq!(
            TargetCpu::parse("skylake"),
            Ok(TargetCpu::Named("skylake".into()))
        );
        assert!(TargetCpu::parse("a b")
            .unwrap_err()
            .contains("not a CPU target"));
    }

    #[test]
    fn report_of_this_host() {
        let report = host_report();
        let text = report.render();
        assert!(
            text.contains("x86-64 level:") && text.contains("Optimized build RUSTFLAGS:"),
            "{text}"
        );
        let json = report.to_json();
        assert_eq!(json["x86_64_level"], report.cpu.level());
        assert!(report.logical_cores >= 1 && report.memory_bytes > 0);
    }
}
