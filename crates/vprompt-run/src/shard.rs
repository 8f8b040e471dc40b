//! Running one experiment's grid as several processes (`vprompt experiment --shard I/N`), e.g. a
//! Slurm job array (`experiments/slurm-array.sh`): which process owns which cell, and where each
//! writes its results so that none overwrites another's.

use std::fmt;
use std::str::FromStr;

/// Share `index` (1-based) of `count` of a grid's cells.
///
/// The cells are ordered by a hash of their names (dataset, backbone, method, seed) and dealt out
/// in turn: shares differ by at most one cell, and each method (the expensive training and the
/// cheap baselines alike) is spread over them rather than landing in one share. The assignment
/// depends only on the grid's cells and `count`: not on the order of the config's lists, the
/// machine, or which shares ran before, so a share restarted anywhere runs the same cells (and an
/// output directory only ever holds one config's grid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which share, from 1.
    pub index: usize,
    /// How many shares.
    pub count: usize,
}

impl Shard {
    /// For each cell of the grid (dataset, backbone, method, seed), whether this share runs it.
    pub fn owned(&self, cells: &[(&str, &str, &str, u64)]) -> Vec<bool> {
        let mut order: Vec<usize> = (0..cells.len()).collect();
        order.sort_by_key(|&i| {
            let (dataset, backbone, method, seed) = cells[i];
            (cell_hash(dataset, backbone, method, seed), i)
        });
        let mut owned = vec![false; cells.len()];
        for (rank, &cell) in order.iter().enumerate() {
            owned[cell] = rank % self.count == self.index - 1;
        }
        owned
    }

    /// The file this share records its finished runs in, beside `results.json`.
    pub fn file_name(&self) -> String {
        format!("{SHARD_PREFIX}{}-of-{}.json", self.index, self.count)
    }
}

/// Shard result files are `results.shard-I-of-N.json`.
pub const SHARD_PREFIX: &str = "results.shard-";

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}`: a share is I/N with 1 <= I <= N, e.g. 2/8");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let index: usize = index.trim().parse().map_err(|_| bad())?;
        let count: usize = count.trim().parse().map_err(|_| bad())?;
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// FNV-1a over the cell's names (NUL-separated) and seed: stable across builds and platforms,
/// unlike `std`'s hasher.
fn cell_hash(dataset: &str, backbone: &str, method: &str, seed: u64) -> u64 {
    use vprompt_core::fingerprint::{OFFSET, fnv1a};
    let mut hash = OFFSET;
    for name in [dataset, backbone, method] {
        hash = fnv1a(fnv1a(hash, name.as_bytes()), &[0]);
    }
    fnv1a(hash, &seed.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_parse_and_refuse_nonsense() {
        assert_eq!("2/8".parse(), Ok(Shard { index: 2, count: 8 }));
        for bad in ["0/3", "4/3", "1", "a/b", "1/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!(
            Shard { index: 2, count: 8 }.file_name(),
            "results.shard-2-of-8.json"
        );
    }

    /// Every cell belongs to exactly one share, shares differ by at most one cell, the assignment
    /// does not depend on the order of the grid, and it is fixed (these values are part of the
    /// contract: a share restarted after an upgrade must run the same cells).
    #[test]
    fn every_cell_has_exactly_one_stable_share() {
        let methods = ["unprompted", "vp", "vp, ILM", "probe", "vp p=1", "vp p=30"];
        let cells: Vec<(&str, &str, &str, u64)> = methods
            .iter()
            .flat_map(|&m| (0..5).map(move |seed| ("F-MNIST", "Lite0", m, seed)))
            .collect();
        let shards: Vec<Shard> = (1..=4).map(|index| Shard { index, count: 4 }).collect();
        let owned: Vec<Vec<bool>> = shards.iter().map(|s| s.owned(&cells)).collect();
        for cell in 0..cells.len() {
            assert_eq!(owned.iter().filter(|o| o[cell]).count(), 1, "{:?}", cells[cell]);
        }
        let sizes: Vec<usize> = owned.iter().map(|o| o.iter().filter(|&&x| x).count()).collect();
        assert_eq!(sizes, [8, 8, 7, 7]);
        let reversed: Vec<_> = cells.iter().rev().copied().collect();
        let mut again = shards[2].owned(&reversed);
        again.reverse();
        assert_eq!(again, owned[2], "the grid's order does not matter");
        assert_eq!(cell_hash("F-MNIST", "Lite0", "vp", 0), 0xdde8042b45432bf);
        let first_share: Vec<_> = cells
            .iter()
            .zip(&owned[0])
            .filter(|&(_, &o)| o)
            .map(|(c, _)| (c.2, c.3))
            .take(3)
            .collect();
        assert_eq!(
            first_share,
            [("unprompted", 1), ("unprompted", 4), ("vp, ILM", 0)]
        );
    }
}
