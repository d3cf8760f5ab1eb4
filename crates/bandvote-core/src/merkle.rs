//! Receipts (DESIGN.md, "Receipts: a voter can check their own vote"): RFC 6962's Merkle tree over
//! the votes counted in a round, whose root the certified result carries, and the audit path that
//! proves one vote is among them.
//!
//! The tree is built bottom-up, level by level: each pair of nodes is hashed into its parent and a
//! last node without a pair is carried up unchanged. That is RFC 6962's Merkle Tree Hash (split at
//! the largest power of two below n) computed iteratively: the levels can be stored, and an audit
//! path is then one node per level ([`path_positions`]), read without rebuilding anything.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// One counted vote, as the tree and the bulletin board (`leaves.jsonl`) hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaf {
    /// The vote id: the voter's receipt.
    pub id: String,
    /// The round.
    pub round: String,
    /// The band.
    pub band: String,
    /// The album.
    pub album: String,
    /// The year, as text.
    pub year: String,
    /// The rank, as text; `null` when the vote had none.
    pub rank: Option<String>,
}

impl Leaf {
    /// The leaf's bytes: canonical JSON (keys sorted, no spaces, UTF-8 as is).
    pub fn canonical_json(&self) -> String {
        let value = serde_json::json!({
            "id": self.id,
            "round": self.round,
            "band": self.band,
            "album": self.album,
            "year": self.year,
            "rank": self.rank,
        });
        let mut out = String::new();
        crate::round::write_canonical(&value, &mut out);
        out
    }

    /// Its hash in the tree.
    pub fn hash(&self) -> Hash {
        leaf_hash(self.canonical_json().as_bytes())
    }
}

/// `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(leaf);
    hasher.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of a tree without leaves: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// A leaf's place in a stored tree and its audit path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Its index among the leaves.
    pub index: u64,
    /// Leaves in the tree.
    pub size: u64,
    /// RFC 6962's audit path, from the leaf up.
    pub path: Vec<Hash>,
    /// The root, lowercase hex.
    pub root: String,
}

/// What a stored tree says of a vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No tree is stored for the round (not final yet, or being stored again).
    NoTree,
    /// The vote is not one of its leaves.
    NotALeaf,
    /// The vote's proof.
    Found(Proof),
}

/// Every level of a tree, the leaves' hashes first, the root last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// The tree over `leaves` (their hashes, in order).
    pub fn new(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|level| level.len() > 1) {
            let above = below
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node_hash(left, right),
                    [single] => *single,
                    _ => unreachable!("chunks of two"),
                })
                .collect();
            levels.push(above);
        }
        Self { levels }
    }

    /// Leaves.
    pub fn size(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// The root (of an empty tree, [`empty_root`]).
    pub fn root(&self) -> Hash {
        self.levels.last().and_then(|top| top.first().copied()).unwrap_or_else(empty_root)
    }

    /// The levels, leaves first.
    pub fn levels(&self) -> &[Vec<Hash>] {
        &self.levels
    }

    /// RFC 6962's audit path for leaf `index`, from the leaf up; `None` past the last leaf.
    pub fn path(&self, index: u64) -> Option<Vec<Hash>> {
        let positions = path_positions(self.size(), index)?;
        Some(positions.into_iter().map(|(level, i)| self.levels[level][i as usize]).collect())
    }
}

/// Where the nodes of leaf `index`'s audit path are in a tree of `size` leaves: (level, index in
/// the level), from the leaves up; `None` when `index` is not a leaf.
pub fn path_positions(size: u64, index: u64) -> Option<Vec<(usize, u64)>> {
    if index >= size {
        return None;
    }
    let (mut i, mut len, mut level, mut positions) = (index, size, 0, Vec::new());
    while len > 1 {
        let sibling = i ^ 1;
        if sibling < len {
            positions.push((level, sibling));
        }
        i /= 2;
        len = len.div_ceil(2);
        level += 1;
    }
    Some(positions)
}

/// Whether `path` proves that `leaf` (its hash) is leaf `index` of the tree of `size` leaves whose
/// root is `root` (RFC 9162, 2.1.3.2).
pub fn verify(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn, mut r) = (index, size - 1, *leaf);
    for p in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// Lowercase hex.
pub fn hex(hash: &Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// A digest from lowercase or uppercase hex; `None` for anything else.
pub fn parse_hex(text: &str) -> Option<Hash> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962's definitions, recursively, as its section 2.1 writes them: MTH and PATH.
    fn mth(leaves: &[&[u8]]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaf_hash(leaves[0]),
            n => {
                let k = split(n);
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn rfc_path(m: usize, leaves: &[&[u8]]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = split(n);
        if m < k {
            let mut path = rfc_path(m, &leaves[..k]);
            path.push(mth(&leaves[k..]));
            path
        } else {
            let mut path = rfc_path(m - k, &leaves[k..]);
            path.push(mth(&leaves[..k]));
            path
        }
    }

    /// The largest power of two smaller than `n` (n > 1).
    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn bytes(hex_text: &str) -> Vec<u8> {
        (0..hex_text.len()).step_by(2).map(|i| u8::from_str_radix(&hex_text[i..i + 2], 16).expect("hex")).collect()
    }

    /// Certificate Transparency's test leaves and the roots of their first 1 to 8.
    const LEAVES: [&str; 8] =
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn the_test_vectors_roots_and_every_path_match_rfc_6962() {
        let data: Vec<Vec<u8>> = LEAVES.iter().map(|l| bytes(l)).collect();
        assert_eq!(
            hex(&Tree::new(Vec::new()).root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for size in 1..=8 {
            let leaves: Vec<&[u8]> = data[..size].iter().map(Vec::as_slice).collect();
            let tree = Tree::new(leaves.iter().map(|l| leaf_hash(l)).collect());
            assert_eq!(hex(&tree.root()), ROOTS[size - 1], "root of {size}");
            assert_eq!(tree.root(), mth(&leaves));
            for index in 0..size {
                let path = tree.path(index as u64).expect("a leaf");
                assert_eq!(path, rfc_path(index, &leaves), "path of {index} in {size}");
                let (leaf, root) = (leaf_hash(leaves[index]), tree.root());
                assert!(verify(&leaf, index as u64, size as u64, &path, &root), "{index} of {size}");
                // A forged leaf, another index, a truncated or lengthened path: refused.
                assert!(!verify(&leaf_hash(b"forged"), index as u64, size as u64, &path, &root));
                if size > 1 {
                    let other = (index + 1) % size;
                    assert!(!verify(&leaf, other as u64, size as u64, &path, &root), "{index} as {other} of {size}");
                    assert!(!verify(&leaf, index as u64, size as u64, &path[..path.len() - 1], &root));
                }
                let mut longer = path.clone();
                longer.push(root);
                assert!(!verify(&leaf, index as u64, size as u64, &longer, &root));
            }
            assert!(tree.path(size as u64).is_none());
        }
    }

    #[test]
    fn larger_trees_agree_with_the_recursive_definition() {
        let data: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_be_bytes().to_vec()).collect();
        for size in [9, 16, 17, 31, 100, 255, 256, 257, 300] {
            let leaves: Vec<&[u8]> = data[..size].iter().map(Vec::as_slice).collect();
            let tree = Tree::new(leaves.iter().map(|l| leaf_hash(l)).collect());
            assert_eq!(tree.root(), mth(&leaves), "{size}");
            for index in [0, 1, size / 2, size - 2, size - 1] {
                assert_eq!(tree.path(index as u64).expect("leaf"), rfc_path(index, &leaves), "{index} of {size}");
            }
        }
    }

    #[test]
    fn a_leaf_is_canonical_json_with_keys_sorted_and_utf8_as_is() {
        let leaf = Leaf {
            id: "k-1".into(),
            round: "final".into(),
            band: "Ranferí Aguilar".into(),
            album: "Canción \"de\" cuna".into(),
            year: "1999".into(),
            rank: None,
        };
        assert_eq!(
            leaf.canonical_json(),
            r#"{"album":"Canción \"de\" cuna","band":"Ranferí Aguilar","id":"k-1","rank":null,"round":"final","year":"1999"}"#
        );
        assert_eq!(parse_hex(&hex(&leaf.hash())), Some(leaf.hash()));
        assert_eq!(parse_hex("zz"), None);
    }
}
