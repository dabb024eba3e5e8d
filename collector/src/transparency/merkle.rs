//! The Merkle tree of RFC 9162 §2.1 (Certificate Transparency 2.0), as pure functions.
//!
//! leaf hash = SHA-256(0x00 || leaf), node hash = SHA-256(0x01 || left || right), and the tree
//! over `n` leaves splits at the largest power of two below `n`. Proofs are generated with the
//! RFC's PATH and SUBPROOF recursions and checked with the verification algorithms of
//! §2.1.3.2 and §2.1.4.2, so any CT-literate auditor can re-implement the checks.

use ring::digest::{Context, SHA256, digest};

pub type Hash = [u8; 32];

/// Why a proof does not verify. The messages say what an auditor should conclude.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not inside a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old tree size {old} is larger than new tree size {new}")]
    OldLargerThanNew { old: u64, new: u64 },
    #[error("the proof has {0} hashes, which does not fit the tree sizes")]
    WrongLength(usize),
    #[error("the proof does not lead to the signed root hash")]
    RootMismatch,
    #[error(
        "the proof does not reproduce the old root hash: the old tree is not a prefix of the new one"
    )]
    OldRootMismatch,
    #[error("equal tree sizes with different root hashes: the log was rewritten")]
    SameSizeDifferentRoot,
}

/// SHA-256 of nothing: the root of the empty tree.
pub fn empty_root() -> Hash {
    to_hash(digest(&SHA256, b"").as_ref())
}

pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x00]);
    ctx.update(leaf);
    to_hash(ctx.finish().as_ref())
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x01]);
    ctx.update(left);
    ctx.update(right);
    to_hash(ctx.finish().as_ref())
}

fn to_hash(bytes: &[u8]) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(bytes);
    out
}

/// The largest power of two strictly below `n` (n >= 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The right edge of a tree: the roots of the perfect subtrees that make up its leaves, largest
/// first (one per set bit of the size). Enough to append leaves and compute the root without
/// reading any earlier leaf, so a new checkpoint only hashes the leaves added since the last.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Rebuilds a frontier from its stored hashes; `None` when their number does not match the
    /// size (one hash per set bit).
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Option<Frontier> {
        (hashes.len() == size.count_ones() as usize).then_some(Frontier { size, hashes })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    pub fn push(&mut self, leaf_hash: Hash) {
        let mut hash = leaf_hash;
        let mut size = self.size;
        // Each trailing one bit is a perfect subtree of the same size as the one being carried.
        while size & 1 == 1 {
            if let Some(left) = self.hashes.pop() {
                hash = node_hash(&left, &hash);
            }
            size >>= 1;
        }
        self.hashes.push(hash);
        self.size += 1;
    }

    pub fn root(&self) -> Hash {
        let mut iter = self.hashes.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// A whole tree held in memory, level by level, for producing proofs. Level 0 holds the leaf
/// hashes; each level pairs the one below, a lone last node moving up unchanged, which gives
/// exactly the nodes of the RFC's tree.
#[derive(Debug, Clone)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    pub fn from_leaf_hashes(leaves: Vec<Hash>) -> Tree {
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|level| level.len() > 1) {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let above = below
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node_hash(left, right),
                    [lone] => *lone,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
            levels.push(above);
        }
        Tree { levels }
    }

    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    pub fn root(&self) -> Hash {
        self.range_hash(0, self.size())
    }

    /// MTH of the first `size` leaves (the root the tree had at that size).
    pub fn root_at(&self, size: u64) -> Hash {
        self.range_hash(0, size.min(self.size()))
    }

    /// MTH(D[start:end]) of this tree's leaves (`end` at most the size).
    pub fn subtree_root(&self, start: u64, end: u64) -> Hash {
        let end = end.min(self.size());
        self.range_hash(start.min(end), end)
    }

    /// MTH(D[start:end]): one stored node when the range is a node of this tree, else the
    /// RFC's split into nodes.
    fn range_hash(&self, start: u64, end: u64) -> Hash {
        let size = end - start;
        if size == 0 {
            return empty_root();
        }
        let level = 64 - (size - 1).leading_zeros() as usize; // smallest k with 2^k >= size
        let width = 1u64 << level;
        if start.is_multiple_of(width)
            && end == (start + width).min(self.size())
            && let Some(hash) = self
                .levels
                .get(level)
                .and_then(|nodes| nodes.get((start >> level) as usize))
        {
            return *hash;
        }
        let k = split_point(size);
        node_hash(
            &self.range_hash(start, start + k),
            &self.range_hash(start + k, end),
        )
    }

    /// The audit path of leaf `index` in the tree of the first `size` leaves (RFC 6962 PATH).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if size > self.size() || index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    fn path(&self, m: u64, start: u64, end: u64, proof: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split_point(n);
        if m < k {
            self.path(m, start, start + k, proof);
            proof.push(self.range_hash(start + k, end));
        } else {
            self.path(m - k, start + k, end, proof);
            proof.push(self.range_hash(start, start + k));
        }
    }

    /// The consistency proof between the trees of the first `old` and first `new` leaves
    /// (RFC 6962 PROOF / SUBPROOF).
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        if old > new {
            return Err(ProofError::OldLargerThanNew { old, new });
        }
        if new > self.size() {
            return Err(ProofError::IndexOutOfRange {
                index: new,
                size: self.size(),
            });
        }
        let mut proof = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut proof);
        }
        Ok(proof)
    }

    fn subproof(&self, m: u64, start: u64, end: u64, complete: bool, proof: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !complete {
                proof.push(self.range_hash(start, end));
            }
            return;
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, start, start + k, complete, proof);
            proof.push(self.range_hash(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, proof);
            proof.push(self.range_hash(start, start + k));
        }
    }
}

/// RFC 9162 §2.1.3.2: does `proof` show leaf `index` with `leaf_hash` inside the tree of
/// `size` leaves with `root`?
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongLength(proof.len()));
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
    if sn != 0 {
        return Err(ProofError::WrongLength(proof.len()));
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: does `proof` show that the tree of `old_size` leaves with `old_root` is a
/// prefix of the tree of `new_size` leaves with `new_root`?
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OldLargerThanNew {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength(proof.len()));
        }
        if old_root != new_root {
            return Err(ProofError::SameSizeDifferentRoot);
        }
        return Ok(());
    }
    if old_size == 0 {
        // The empty tree is a prefix of every tree.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::WrongLength(proof.len()))
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength(proof.len()));
    };
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return Err(ProofError::WrongLength(proof.len()));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength(proof.len()));
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MTH straight from the RFC's definition, as the reference.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    const MAX: u64 = 40;

    #[test]
    fn the_hashes_are_domain_separated_as_rfc_9162_says() {
        let mut leaf = vec![0x00];
        leaf.extend_from_slice(b"x");
        assert_eq!(leaf_hash(b"x"), to_hash(digest(&SHA256, &leaf).as_ref()));
        let (l, r) = ([1u8; 32], [2u8; 32]);
        let mut node = vec![0x01];
        node.extend_from_slice(&l);
        node.extend_from_slice(&r);
        assert_eq!(node_hash(&l, &r), to_hash(digest(&SHA256, &node).as_ref()));
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn frontier_and_tree_agree_with_the_definition_at_every_size() {
        let all = leaves(MAX);
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), empty_root());
        for n in 1..=MAX {
            frontier.push(all[(n - 1) as usize]);
            let reference = mth(&all[..n as usize]);
            assert_eq!(frontier.root(), reference, "frontier at {n}");
            assert_eq!(frontier.hashes().len(), n.count_ones() as usize);
            let tree = Tree::from_leaf_hashes(all[..n as usize].to_vec());
            assert_eq!(tree.root(), reference, "tree at {n}");
            for m in 0..=n {
                assert_eq!(
                    tree.root_at(m),
                    mth(&all[..m as usize]),
                    "root_at {m} of {n}"
                );
            }
            let rebuilt = Frontier::from_parts(n, frontier.hashes().to_vec()).expect("parts");
            assert_eq!(rebuilt, frontier);
        }
        assert!(Frontier::from_parts(3, vec![[0; 32]]).is_none());
    }

    #[test]
    fn every_inclusion_proof_verifies_and_no_tampered_one_does() {
        let all = leaves(MAX);
        let tree = Tree::from_leaf_hashes(all.clone());
        for size in 1..=MAX {
            let root = tree.root_at(size);
            for index in 0..size {
                let proof = tree.inclusion_proof(index, size).expect("proof");
                let leaf = &all[index as usize];
                verify_inclusion(leaf, index, size, &proof, &root)
                    .unwrap_or_else(|e| panic!("leaf {index} of {size}: {e}"));
                // Another leaf, index, root or any changed hash of the path fails.
                assert!(verify_inclusion(&[7; 32], index, size, &proof, &root).is_err());
                if size > 1 {
                    let other = (index + 1) % size;
                    assert!(verify_inclusion(leaf, other, size, &proof, &root).is_err());
                }
                // (A different size may fit the same path: the size is bound by the signed
                // checkpoint, which carries it beside the root.)
                assert!(verify_inclusion(leaf, index, size, &proof, &[0; 32]).is_err());
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][0] ^= 1;
                    assert!(verify_inclusion(leaf, index, size, &bad, &root).is_err());
                }
                let mut longer = proof.clone();
                longer.push([0; 32]);
                assert!(verify_inclusion(leaf, index, size, &longer, &root).is_err());
                if !proof.is_empty() {
                    let shorter = &proof[..proof.len() - 1];
                    assert!(verify_inclusion(leaf, index, size, shorter, &root).is_err());
                }
            }
            assert!(tree.inclusion_proof(size, size).is_err());
            assert!(verify_inclusion(&all[0], size, size, &[], &root).is_err());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_no_tampered_one_does() {
        let all = leaves(MAX);
        let tree = Tree::from_leaf_hashes(all.clone());
        for new in 1..=MAX {
            let new_root = tree.root_at(new);
            for old in 1..=new {
                let old_root = tree.root_at(old);
                let proof = tree.consistency_proof(old, new).expect("proof");
                verify_consistency(old, new, &old_root, &new_root, &proof)
                    .unwrap_or_else(|e| panic!("{old} -> {new}: {e}"));
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][31] ^= 0x80;
                    assert!(
                        verify_consistency(old, new, &old_root, &new_root, &bad).is_err(),
                        "{old} -> {new} with hash {i} changed"
                    );
                }
                assert!(verify_consistency(old, new, &[9; 32], &new_root, &proof).is_err());
                assert!(verify_consistency(old, new, &old_root, &[9; 32], &proof).is_err());
                if old < new {
                    let shorter = &proof[..proof.len() - 1];
                    assert!(verify_consistency(old, new, &old_root, &new_root, shorter).is_err());
                    let mut longer = proof.clone();
                    longer.push([0; 32]);
                    assert!(verify_consistency(old, new, &old_root, &new_root, &longer).is_err());
                }
            }
            assert!(tree.consistency_proof(new + 1, new).is_err());
        }
    }

    #[test]
    fn a_rewritten_or_removed_leaf_breaks_consistency_with_the_old_root() {
        let all = leaves(20);
        let honest = Tree::from_leaf_hashes(all.clone());
        let old_root = honest.root_at(12);
        // The attacker rewrites leaf 11 (the newest the old checkpoint covered) ...
        let mut rewritten = all.clone();
        rewritten[11] = leaf_hash(b"forged");
        // ... or removes it, so that later leaves move down one place.
        let mut removed = all.clone();
        removed.remove(11);
        for forged in [rewritten, removed] {
            let tree = Tree::from_leaf_hashes(forged);
            let new = tree.size();
            let proof = tree.consistency_proof(12, new).expect("proof");
            assert_eq!(
                verify_consistency(12, new, &old_root, &tree.root(), &proof),
                Err(ProofError::OldRootMismatch)
            );
        }
    }

    #[test]
    fn equal_sizes_need_equal_roots_and_an_empty_proof() {
        let tree = Tree::from_leaf_hashes(leaves(5));
        let root = tree.root();
        assert_eq!(
            tree.consistency_proof(5, 5).expect("proof"),
            Vec::<Hash>::new()
        );
        assert!(verify_consistency(5, 5, &root, &root, &[]).is_ok());
        assert_eq!(
            verify_consistency(5, 5, &root, &[0; 32], &[]),
            Err(ProofError::SameSizeDifferentRoot)
        );
        assert!(verify_consistency(5, 5, &root, &root, &[[0; 32]]).is_err());
        assert!(verify_consistency(0, 5, &empty_root(), &root, &[]).is_ok());
    }
}
