//! TF Serving's servable version policies (`model_version_policy`): which of the versions found
//! on disk a model should serve.

use std::collections::BTreeSet;

/// Which versions to serve (`FileSystemStoragePathSourceConfig.ServableVersionPolicy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The highest N versions (TF Serving's default: 1).
    Latest(usize),
    /// Every version found.
    All,
    /// Exactly these versions, as they appear.
    Specific(BTreeSet<u64>),
}

impl VersionPolicy {
    /// The versions to serve among `candidates` (versions on disk that can be loaded).
    pub fn aspired(&self, candidates: &BTreeSet<u64>) -> BTreeSet<u64> {
        match self {
            VersionPolicy::Latest(n) => candidates.iter().rev().take(*n).copied().collect(),
            VersionPolicy::All => candidates.clone(),
            VersionPolicy::Specific(wanted) => candidates.intersection(wanted).copied().collect(),
        }
    }
}

impl std::fmt::Display for VersionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionPolicy::Latest(1) => write!(f, "the latest version"),
            VersionPolicy::Latest(n) => write!(f, "the latest {n} versions"),
            VersionPolicy::All => write!(f, "all versions"),
            VersionPolicy::Specific(v) => write!(f, "versions {v:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_what_each_policy_names() {
        let disk = BTreeSet::from([1, 2, 5, 10]);
        assert_eq!(
            VersionPolicy::Latest(1).aspired(&disk),
            BTreeSet::from([10])
        );
        assert_eq!(
            VersionPolicy::Latest(2).aspired(&disk),
            BTreeSet::from([5, 10])
        );
        assert_eq!(VersionPolicy::All.aspired(&disk), disk);
        assert_eq!(
            VersionPolicy::Specific(BTreeSet::from([2, 3])).aspired(&disk),
            BTreeSet::from([2])
        );
        assert!(VersionPolicy::Latest(1)
            .aspired(&BTreeSet::new())
            .is_empty());
    }
}
