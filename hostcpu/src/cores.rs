//! How many cores this process may compute on, and why: the host's physical cores, capped by
//! the CPUs it may run on (affinity, cpusets: `docker run --cpuset-cpus`) and by its CPU quota
//! (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`: `docker run --cpus`, a Kubernetes CPU limit).
//! A container limited to 2 CPUs on a 64-core host must not start 64 threads, and one limited to
//! 1.5 CPUs is throttled with 2 busy threads.

use std::path::Path;

/// The cores for compute and what decided them.
#[derive(Clone, Debug, PartialEq)]
pub struct CoreBudget {
    /// Threads that may compute at once: at least 1.
    pub cores: usize,
    /// Physical cores of the host (logical CPUs if unknown).
    pub physical: usize,
    /// CPUs this process may run on (affinity).
    pub affinity: usize,
    /// The CPU quota in CPUs (`1.5` for `--cpus 1.5`), if one is set.
    pub quota: Option<f64>,
    /// Where the quota came from (`cgroup v2 cpu.max 150000 100000`).
    pub quota_source: Option<String>,
}

impl CoreBudget {
    /// One line for the start-up log: the count and the basis.
    pub fn describe(&self) -> String {
        let mut why = vec![
            format!("{} physical", self.physical),
            format!("{} usable (affinity)", self.affinity),
        ];
        if let (Some(q), Some(src)) = (self.quota, &self.quota_source) {
            why.push(format!("CPU quota {q:.2} ({src})"));
        }
        format!("Cores for inference: {} ({})", self.cores, why.join(", "))
    }
}

/// The cores for compute: physical cores, capped by affinity and by the CPU quota rounded down
/// (at least 1).
pub fn core_budget() -> CoreBudget {
    let affinity = affinity_cpus();
    let physical = sysinfo::System::physical_core_count().unwrap_or(affinity);
    let quota = cgroup_quota(Path::new("/"));
    budget(physical, affinity, quota)
}

/// [`core_budget`]'s count.
pub fn compute_cores() -> usize {
    core_budget().cores
}

fn budget(physical: usize, affinity: usize, quota: Option<(f64, String)>) -> CoreBudget {
    let mut cores = physical.clamp(1, affinity.max(1));
    if let Some((q, _)) = &quota {
        cores = cores.min((q.floor() as usize).max(1));
    }
    CoreBudget {
        cores,
        physical,
        affinity,
        quota: quota.as_ref().map(|(q, _)| *q),
        quota_source: quota.map(|(_, s)| s),
    }
}

/// CPUs in this process's affinity mask (cpusets included).
fn affinity_cpus() -> usize {
    #[cfg(target_os = "linux")]
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>() bytes into `set`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let n = libc::CPU_COUNT(&set);
            if n > 0 {
                return n as usize;
            }
        }
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The CPU quota of this process's cgroup, in CPUs, with where it was read, under the
/// filesystem root `root` (`/`; a test's folder): cgroup v2's `cpu.max` (`max 100000` is no
/// quota), else v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1 is none).
pub fn cgroup_quota(root: &Path) -> Option<(f64, String)> {
    let cgroups = std::fs::read_to_string(root.join("proc/self/cgroup")).unwrap_or_default();
    let fs = root.join("sys/fs/cgroup");
    // v2: "0::/path"; inside a container's cgroup namespace the path is "/".
    if let Some(path) = cgroups.lines().find_map(|l| l.strip_prefix("0::")) {
        for dir in [fs.join(path.trim_start_matches('/')), fs.clone()] {
            if let Ok(text) = std::fs::read_to_string(dir.join("cpu.max")) {
                let mut parts = text.split_whitespace();
                let (quota, period) = (parts.next()?, parts.next()?);
                if quota == "max" {
                    return None;
                }
                let (q, p): (f64, f64) = (quota.parse().ok()?, period.parse().ok()?);
                return (q > 0.0 && p > 0.0)
                    .then(|| (q / p, format!("cgroup v2 cpu.max {quota} {period}")));
            }
        }
    }
    // v1: "N:cpu,cpuacct:/path".
    let path = cgroups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers.split(',').any(|c| c == "cpu").then_some(path)
    })?;
    for base in ["cpu,cpuacct", "cpu"] {
        for dir in [
            fs.join(base).join(path.trim_start_matches('/')),
            fs.join(base),
        ] {
            let read = |f: &str| -> Option<f64> {
                std::fs::read_to_string(dir.join(f))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            };
            if let (Some(q), Some(p)) = (read("cpu.cfs_quota_us"), read("cpu.cfs_period_us")) {
                return (q > 0.0 && p > 0.0).then(|| {
                    (
                        q / p,
                        format!("cgroup v1 cpu.cfs_quota_us {q} / cpu.cfs_period_us {p}"),
                    )
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(name: &str, cgroup: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("hostcpu-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("proc/self")).unwrap();
        std::fs::write(root.join("proc/self/cgroup"), cgroup).unwrap();
        for (path, text) in files {
            let file = root.join("sys/fs/cgroup").join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        root
    }

    #[test]
    fn quotas_from_cgroup_v2_and_v1_cap_the_cores() {
        let v2 = fake_root("v2", "0::/\n", &[("cpu.max", "150000 100000\n")]);
        let (q, src) = cgroup_quota(&v2).unwrap();
        assert_eq!(q, 1.5);
        assert!(src.contains("cpu.max"), "{src}");
        let b = budget(4, 4, Some((q, src)));
        assert_eq!(b.cores, 1);
        assert!(b.describe().contains("CPU quota 1.50"), "{}", b.describe());

        let none = fake_root("v2-max", "0::/\n", &[("cpu.max", "max 100000\n")]);
        assert_eq!(cgroup_quota(&none), None);

        let v1 = fake_root(
            "v1",
            "4:cpu,cpuacct:/docker/abc\n",
            &[
                ("cpu,cpuacct/cpu.cfs_quota_us", "200000\n"),
                ("cpu,cpuacct/cpu.cfs_period_us", "100000\n"),
            ],
        );
        assert_eq!(cgroup_quota(&v1).map(|(q, _)| q), Some(2.0));
        let unlimited = fake_root(
            "v1-none",
            "4:cpu,cpuacct:/\n",
            &[
                ("cpu,cpuacct/cpu.cfs_quota_us", "-1\n"),
                ("cpu,cpuacct/cpu.cfs_period_us", "100000\n"),
            ],
        );
        assert_eq!(cgroup_quota(&unlimited), None);
        // A quota under one CPU still computes on one; affinity caps too.
        assert_eq!(budget(8, 8, Some((0.5, "q".into()))).cores, 1);
        assert_eq!(budget(8, 3, None).cores, 3);
        for root in [v2, none, v1, unlimited] {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}
