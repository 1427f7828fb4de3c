//! Which nodes can run an image: its CPU contract (the `io.onnx-serving.*` labels that `builder
//! devel` and `builder optimize` record) as node-feature-discovery (NFD) labels,
//! `feature.node.kubernetes.io/cpu-cpuid.<FLAG>: "true"`.
//!
//! NFD names CPUID flags as the klauspost/cpuid Go package does (`FMA3`, `AVXVNNI`, `AMXINT8`)
//! and, by default, does not publish the common ones listed in its worker's
//! `cpuid.attributeBlacklist` (SSE3…SSE4.2, POPCNT, CX16, F16C, BMI1, BMI2, LZCNT, …): every node
//! that has AVX2 has those, so leaving them out of the selector loses nothing. NFD publishes no
//! x86-64 level label; a level is the sum of its flags.

use std::collections::{BTreeMap, HashMap};

use super::super::LABEL_PREFIX;

/// NFD's label prefix for CPUID flags.
pub const NFD_CPUID: &str = "feature.node.kubernetes.io/cpu-cpuid.";

/// Our instruction-set name (as `builder cpu` prints it) → NFD's CPUID flag name; `None` for
/// sets NFD does not publish by default.
pub fn nfd_flag(ours: &str) -> Option<&'static str> {
    Some(match ours {
        "LAHF" => "LAHF",
        "AVX" => "AVX",
        "AVX2" => "AVX2",
        "FMA" => "FMA3",
        "MOVBE" => "MOVBE",
        "XSAVE" => "XSAVE",
        "AVX512F" => "AVX512F",
        "AVX512CD" => "AVX512CD",
        "AVX512BW" => "AVX512BW",
        "AVX512DQ" => "AVX512DQ",
        "AVX512VL" => "AVX512VL",
        "AVX512VNNI" => "AVX512VNNI",
        "AVX512BF16" => "AVX512BF16",
        "AVX512VBMI" => "AVX512VBMI",
        "AVX-VNNI" => "AVXVNNI",
        "AMX-TILE" => "AMXTILE",
        "AMX-BF16" => "AMXBF16",
        "AMX-INT8" => "AMXINT8",
        // SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT, CX16, F16C, BMI1, BMI2, LZCNT: blacklisted by NFD.
        _ => return None,
    })
}

/// `optimize_model.py`'s /proc/cpuinfo flag names → ours, for the flags an optimized model's
/// accuracy gate depended on (int8 kernels pick VNNI/AMX code paths with other rounding).
fn from_cpuinfo(flag: &str) -> Option<&'static str> {
    Some(match flag {
        "avx512_vnni" => "AVX512VNNI",
        "avx_vnni" => "AVX-VNNI",
        "amx_int8" => "AMX-INT8",
        "amx_bf16" => "AMX-BF16",
        "avx512_bf16" => "AVX512BF16",
        _ => return None,
    })
}

/// What an image needs of a node's CPU, from its labels: the instruction sets the binary was
/// compiled for (`io.onnx-serving.instruction-sets`, space-separated) plus, for an int8 or bf16
/// variant the optimizer made, the VNNI/AMX/BF16 sets present on the host where its accuracy
/// gate ran (`io.onnx-serving.optimization.host-cpu-flags`). A model that came reduced and was
/// left as it is (`optimization.variant` fp32) was not gated there: it adds nothing. Empty for
/// a portable fp32 image.
pub fn required_sets(labels: &HashMap<String, String>) -> Vec<String> {
    let get = |k: &str| {
        labels
            .get(&format!("{LABEL_PREFIX}{k}"))
            .map(String::as_str)
    };
    let mut sets: Vec<String> = get("instruction-sets")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let precision = get("precision").unwrap_or("fp32");
    let gated_here = get("optimization.variant") != Some("fp32");
    if precision != "fp32" && gated_here {
        for flag in get("optimization.host-cpu-flags")
            .unwrap_or_default()
            .split_whitespace()
        {
            if let Some(set) = from_cpuinfo(flag) {
                if !sets.iter().any(|s| s == set) {
                    sets.push(set.to_string());
                }
            }
        }
    }
    sets
}

/// The node selector for an image: `kubernetes.io/arch: amd64` (the binary is x86-64 whatever
/// its level) and one NFD label per required set that NFD publishes. A portable image gets the
/// architecture alone.
pub fn node_selector(labels: &HashMap<String, String>) -> BTreeMap<String, String> {
    let mut selector = BTreeMap::from([("kubernetes.io/arch".to_string(), "amd64".to_string())]);
    for set in required_sets(labels) {
        if let Some(flag) = nfd_flag(&set) {
            selector.insert(format!("{NFD_CPUID}{flag}"), "true".to_string());
        }
    }
    selector
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{LABEL_PREFIX}{k}"), v.to_string()))
            .collect()
    }

    fn cpuid_keys(selector: &BTreeMap<String, String>) -> Vec<&str> {
        selector
            .keys()
            .filter_map(|k| k.strip_prefix(NFD_CPUID))
            .collect()
    }

    #[test]
    fn portable_images_need_only_the_architecture() {
        let selector = node_selector(&labels(&[
            ("target-cpu", "portable"),
            ("x86-64-level", "1"),
            ("instruction-sets", ""),
        ]));
        assert_eq!(selector.len(), 1);
        assert_eq!(selector["kubernetes.io/arch"], "amd64");
    }

    #[test]
    fn a_v3_image_needs_what_nfd_publishes_of_v3() {
        let v3 = hostcpu::level_features(3).join(" ");
        let selector = node_selector(&labels(&[("instruction-sets", &v3)]));
        assert_eq!(
            cpuid_keys(&selector),
            ["AVX", "AVX2", "FMA3", "LAHF", "MOVBE", "XSAVE"]
        );
        assert!(selector
            .iter()
            .filter(|(k, _)| k.starts_with(NFD_CPUID))
            .all(|(_, v)| v == "true"));
    }

    #[test]
    fn a_v4_image_adds_avx512() {
        let v4 = hostcpu::level_features(4).join(" ");
        let keys = cpuid_keys(&node_selector(&labels(&[("instruction-sets", &v4)]))).join(" ");
        for flag in [
            "AVX2", "AVX512F", "AVX512BW", "AVX512CD", "AVX512DQ", "AVX512VL",
        ] {
            assert!(keys.contains(flag), "{flag} missing from {keys}");
        }
    }

    #[test]
    fn an_int8_model_gated_on_vnni_needs_vnni() {
        let l = labels(&[
            ("instruction-sets", "AVX2 FMA"),
            ("precision", "int8"),
            (
                "optimization.host-cpu-flags",
                "avx2 fma avx512f avx512_vnni",
            ),
        ]);
        assert_eq!(
            cpuid_keys(&node_selector(&l)),
            ["AVX2", "AVX512VNNI", "FMA3"]
        );
        // The same host flags do not matter to an fp32 model.
        let fp32 = labels(&[
            ("instruction-sets", "AVX2 FMA"),
            ("precision", "fp32"),
            ("optimization.host-cpu-flags", "avx512_vnni"),
        ]);
        assert_eq!(cpuid_keys(&node_selector(&fp32)), ["AVX2", "FMA3"]);
        // Nor to a model that came int8 and was left as it is.
        let as_it_came = labels(&[
            ("instruction-sets", "AVX2 FMA"),
            ("precision", "int8"),
            ("optimization.variant", "fp32"),
            ("optimization.host-cpu-flags", "avx512_vnni"),
        ]);
        assert_eq!(cpuid_keys(&node_selector(&as_it_came)), ["AVX2", "FMA3"]);
    }

    #[test]
    fn every_reported_set_maps_or_is_knowingly_left_out() {
        let left_out = [
            "SSE3", "SSSE3", "SSE4.1", "SSE4.2", "POPCNT", "CX16", "F16C", "BMI1", "BMI2", "LZCNT",
        ];
        for feature in hostcpu::FEATURES {
            assert!(
                nfd_flag(feature.name).is_some() || left_out.contains(&feature.name),
                "{} has no NFD mapping",
                feature.name
            );
        }
    }
}
