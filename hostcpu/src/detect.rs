//! This CPU as CPUID reports it, each feature counted as usable only when the OS saves its
//! register state (XCR0): [`detect`] and the [`CpuInfo`] it returns.

use std::collections::BTreeSet;

use crate::x86_64_level;
#[cfg(target_arch = "x86_64")]
use crate::{OsState, FEATURES};

/// What CPUID says about this CPU.
#[derive(Clone, Debug, Default)]
pub struct CpuInfo {
    pub vendor: String,
    pub brand: String,
    pub family: u8,
    pub model: u8,
    /// Usable: present in the CPU and enabled by the OS.
    pub usable: BTreeSet<&'static str>,
    /// Present in the CPU but with register state the OS does not save: unusable.
    pub disabled_by_os: BTreeSet<&'static str>,
    /// False on a non-x86-64 host: everything above is empty.
    pub x86_64: bool,
}

impl CpuInfo {
    pub fn level(&self) -> u8 {
        x86_64_level(&self.usable)
    }
}

#[cfg(target_arch = "x86_64")]
pub fn detect() -> CpuInfo {
    use raw_cpuid::CpuId;
    let cpuid = CpuId::new();
    let fi = cpuid.get_feature_info();
    let ef = cpuid.get_extended_feature_info();
    let ext = cpuid.get_extended_processor_and_feature_identifiers();
    let fi_has = |g: fn(&raw_cpuid::FeatureInfo) -> bool| fi.as_ref().is_some_and(g);
    let ef_has = |g: fn(&raw_cpuid::ExtendedFeatures) -> bool| ef.as_ref().is_some_and(g);
    let ext_has = |g: fn(&raw_cpuid::ExtendedProcessorFeatureIdentifiers) -> bool| {
        ext.as_ref().is_some_and(g)
    };
    let in_cpu = |name: &str| -> bool {
        match name {
            "SSE3" => fi_has(|f| f.has_sse3()),
            "SSSE3" => fi_has(|f| f.has_ssse3()),
            "SSE4.1" => fi_has(|f| f.has_sse41()),
            "SSE4.2" => fi_has(|f| f.has_sse42()),
            "POPCNT" => fi_has(|f| f.has_popcnt()),
            "CX16" => fi_has(|f| f.has_cmpxchg16b()),
            "LAHF" => ext_has(|e| e.has_lahf_sahf()),
            "AVX" => fi_has(|f| f.has_avx()),
            "AVX2" => ef_has(|e| e.has_avx2()),
            "FMA" => fi_has(|f| f.has_fma()),
            "F16C" => fi_has(|f| f.has_f16c()),
            "BMI1" => ef_has(|e| e.has_bmi1()),
            "BMI2" => ef_has(|e| e.has_bmi2()),
            "LZCNT" => ext_has(|e| e.has_lzcnt()),
            "MOVBE" => fi_has(|f| f.has_movbe()),
            "XSAVE" => fi_has(|f| f.has_xsave()),
            "AVX512F" => ef_has(|e| e.has_avx512f()),
            "AVX512CD" => ef_has(|e| e.has_avx512cd()),
            "AVX512BW" => ef_has(|e| e.has_avx512bw()),
            "AVX512DQ" => ef_has(|e| e.has_avx512dq()),
            "AVX512VL" => ef_has(|e| e.has_avx512vl()),
            "AVX512VNNI" => ef_has(|e| e.has_avx512vnni()),
            "AVX512BF16" => ef_has(|e| e.has_avx512_bf16()),
            "AVX512VBMI" => ef_has(|e| e.has_avx512vbmi()),
            "AVX-VNNI" => ef_has(|e| e.has_avx_vnni()),
            "AMX-TILE" => ef_has(|e| e.has_amx_tile()),
            "AMX-BF16" => ef_has(|e| e.has_amx_bf16()),
            "AMX-INT8" => ef_has(|e| e.has_amx_int8()),
            _ => false,
        }
    };
    let xcr0 = if fi_has(|f| f.has_oxsave()) {
        read_xcr0()
    } else {
        0
    };
    let os_allows = |os: OsState| match os {
        OsState::None => true,
        OsState::Avx => xcr0 & 0b110 == 0b110,
        OsState::Avx512 => xcr0 & 0b1110_0110 == 0b1110_0110,
        OsState::Amx => xcr0 & (0b11 << 17) == (0b11 << 17),
    };
    let mut info = CpuInfo {
        x86_64: true,
        ..CpuInfo::default()
    };
    for feature in FEATURES {
        if in_cpu(feature.name) {
            if os_allows(feature.os) {
                info.usable.insert(feature.name);
            } else {
                info.disabled_by_os.insert(feature.name);
            }
        }
    }
    info.vendor = cpuid
        .get_vendor_info()
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    info.brand = cpuid
        .get_processor_brand_string()
        .map(|b| b.as_str().trim().to_string())
        .unwrap_or_default();
    if let Some(fi) = &fi {
        info.family = fi.family_id();
        info.model = fi.model_id();
    }
    info
}

#[cfg(not(target_arch = "x86_64"))]
pub fn detect() -> CpuInfo {
    CpuInfo::default()
}

#[cfg(target_arch = "x86_64")]
fn read_xcr0() -> u64 {
    #[target_feature(enable = "xsave")]
    unsafe fn xgetbv0() -> u64 {
        // SAFETY: only called when CPUID reports OSXSAVE, which makes XGETBV legal.
        unsafe { std::arch::x86_64::_xgetbv(0) }
    }
    // SAFETY: the caller checked OSXSAVE.
    unsafe { xgetbv0() }
}
