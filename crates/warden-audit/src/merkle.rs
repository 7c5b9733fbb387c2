//! RFC 6962 / RFC 9162 Merkle tree hashing for an append-only log.
//!
//! A store keeps the hash of every *perfect subtree* (a complete binary tree of `2^level`
//! leaves aligned on a multiple of its size) as it is completed. Those nodes never change once
//! written, so any inclusion or consistency proof can be assembled from them without
//! rehashing leaves: a [`ProofPlan`] names the nodes to fetch and [`ProofPlan::assemble`]
//! folds them into proof elements. The [`CompactRange`] keeps only the right frontier of the
//! tree, enough to append and to compute the current root in `O(log n)` memory.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

/// A SHA-256 digest: leaf hashes, node hashes and tree roots.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 ‖ data)`: the domain-separation byte keeps a leaf from ever being mistaken
/// for an interior node.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// A perfect subtree covering leaves `[index·2^level, (index+1)·2^level)`. Level 0 is a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub fn new(level: u8, index: u64) -> NodeId {
        NodeId { level, index }
    }

    /// First leaf covered.
    pub fn start(self) -> u64 {
        self.index << self.level
    }

    /// One past the last leaf covered.
    pub fn end(self) -> u64 {
        (self.index + 1) << self.level
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "level {} index {}", self.level, self.index)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("no consistency proof from size {old_size} to the smaller size {new_size}")]
    SizesOutOfOrder { old_size: u64, new_size: u64 },
    #[error("tree node ({0}) is not stored")]
    MissingNode(NodeId),
    #[error("a tree of size {size} has {expected} frontier nodes, {got} were given")]
    FrontierMismatch {
        size: u64,
        expected: usize,
        got: usize,
    },
}

/// The perfect subtrees, left to right and in decreasing size, whose fold is the RFC 6962
/// hash of leaves `[start, start + len)`. `start` must be a multiple of the largest power of
/// two not above `len`, which holds for every range the RFC recursion produces.
fn range_nodes(start: u64, len: u64) -> Vec<NodeId> {
    let mut nodes = Vec::with_capacity(len.count_ones() as usize);
    let mut pos = start;
    for level in (0..64u8).rev() {
        if (len >> level) & 1 == 1 {
            nodes.push(NodeId {
                level,
                index: pos >> level,
            });
            pos += 1 << level;
        }
    }
    nodes
}

/// Folds perfect-subtree hashes (left to right, decreasing size) into the hash of the range
/// they cover. The RFC splits at the largest power of two, so the leftmost subtree is the
/// left child at every step and the fold runs from the right.
fn fold(hashes: &[Hash]) -> Option<Hash> {
    let (last, rest) = hashes.split_last()?;
    Some(
        rest.iter()
            .rev()
            .fold(*last, |acc, left| node_hash(left, &acc)),
    )
}

/// Largest power of two strictly below `n` (`n > 1`).
fn split_point(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The right frontier of an append-only Merkle tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    /// One hash per set bit of `size`, largest subtree first.
    frontier: Vec<Hash>,
}

impl CompactRange {
    pub fn new() -> CompactRange {
        CompactRange::default()
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier hashes, matching [`CompactRange::frontier_ids`] for the current size.
    pub fn frontier(&self) -> &[Hash] {
        &self.frontier
    }

    /// Appends a leaf hash and returns every perfect subtree this append completed, smallest
    /// first, starting with the leaf itself at level 0. Storing all of them is what lets
    /// [`ProofPlan`] serve any proof later.
    pub fn append(&mut self, leaf: Hash) -> Vec<(NodeId, Hash)> {
        let mut completed = Vec::with_capacity(1 + self.size.trailing_ones() as usize);
        let mut node = NodeId {
            level: 0,
            index: self.size,
        };
        let mut hash = leaf;
        completed.push((node, hash));
        // Each trailing one bit of the old size is a subtree of equal size waiting on our left.
        while node.level < 64 && (self.size >> node.level) & 1 == 1 {
            let left = self
                .frontier
                .pop()
                .expect("frontier has one hash per set bit of size");
            hash = node_hash(&left, &hash);
            node = NodeId {
                level: node.level + 1,
                index: node.index >> 1,
            };
            completed.push((node, hash));
        }
        self.frontier.push(hash);
        self.size += 1;
        completed
    }

    /// The RFC 6962 tree head (MTH) of all leaves appended so far.
    pub fn root(&self) -> Hash {
        fold(&self.frontier).unwrap_or_else(empty_root)
    }

    /// The perfect subtrees, left to right, that make up a tree of `size` leaves.
    pub fn frontier_ids(size: u64) -> Vec<NodeId> {
        range_nodes(0, size)
    }

    /// Resumes from stored node hashes, given in the order of [`CompactRange::frontier_ids`].
    pub fn from_frontier(size: u64, hashes: Vec<Hash>) -> Result<CompactRange, MerkleError> {
        let expected = size.count_ones() as usize;
        if hashes.len() != expected {
            return Err(MerkleError::FrontierMismatch {
                size,
                expected,
                got: hashes.len(),
            });
        }
        Ok(CompactRange {
            size,
            frontier: hashes,
        })
    }
}

/// Which stored perfect subtrees make up each element of a proof.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProofPlan {
    /// One entry per proof element in RFC 6962 / RFC 9162 order; each lists the perfect
    /// subtrees, left to right, whose fold is that element.
    pub elements: Vec<Vec<NodeId>>,
}

impl ProofPlan {
    /// Every node needed, once each, so a store can fetch them in one query.
    pub fn node_ids(&self) -> Vec<NodeId> {
        let set: BTreeSet<NodeId> = self.elements.iter().flatten().copied().collect();
        set.into_iter().collect()
    }

    pub fn assemble(
        &self,
        lookup: impl Fn(NodeId) -> Option<Hash>,
    ) -> Result<Vec<Hash>, MerkleError> {
        self.elements
            .iter()
            .map(|nodes| {
                let hashes = nodes
                    .iter()
                    .map(|&id| lookup(id).ok_or(MerkleError::MissingNode(id)))
                    .collect::<Result<Vec<Hash>, _>>()?;
                Ok(fold(&hashes).expect("a proof element covers at least one leaf"))
            })
            .collect()
    }
}

/// Plans the audit path (RFC 6962 §2.1.1 `PATH`) of leaf `index` in a tree of `size` leaves.
pub fn inclusion_plan(index: u64, size: u64) -> Result<ProofPlan, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    // Walk down from the root, collecting siblings; the proof lists them leaf first.
    let mut elements = Vec::new();
    let (mut start, mut n, mut m) = (0u64, size, index);
    while n > 1 {
        let k = split_point(n);
        if m < k {
            elements.push(range_nodes(start + k, n - k));
            n = k;
        } else {
            elements.push(range_nodes(start, k));
            start += k;
            m -= k;
            n -= k;
        }
    }
    elements.reverse();
    Ok(ProofPlan { elements })
}

/// Plans the consistency proof (RFC 6962 §2.1.2 `PROOF`) between two sizes of one tree.
/// Equal sizes and an empty old tree need no proof, so the plan is empty.
pub fn consistency_plan(old_size: u64, new_size: u64) -> Result<ProofPlan, MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::SizesOutOfOrder { old_size, new_size });
    }
    let mut elements = Vec::new();
    if old_size == 0 || old_size == new_size {
        return Ok(ProofPlan { elements });
    }
    // SUBPROOF(m, D[start..start+n], complete), unrolled.
    let (mut start, mut n, mut m, mut complete) = (0u64, new_size, old_size, true);
    while m != n {
        let k = split_point(n);
        if m <= k {
            elements.push(range_nodes(start + k, n - k));
            n = k;
        } else {
            elements.push(range_nodes(start, k));
            start += k;
            m -= k;
            n -= k;
            complete = false;
        }
    }
    if !complete {
        elements.push(range_nodes(start, m));
    }
    elements.reverse();
    Ok(ProofPlan { elements })
}

/// RFC 9162 §2.1.3.2: does `proof` show that `leaf` is leaf `index` of the tree with `root`?
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
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

/// RFC 9162 §2.1.4.2: does `proof` show that the tree with `new_root` extends the one with
/// `old_root`? Equal sizes need an empty proof and equal roots; the empty tree is a prefix
/// of every tree, so from size 0 only `old_root` is checked.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == 0 {
        return proof.is_empty() && *old_root == empty_root();
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);

    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return false;
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
    fr == *old_root && sr == *new_root && sn == 0
}

/// The RFC 6962 `MTH` computed directly from all leaf hashes: the reference the incremental
/// structures are checked against, and a convenience for small trees.
pub fn root_from_leaves(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(
                &root_from_leaves(&leaves[..k]),
                &root_from_leaves(&leaves[k..]),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const MAX: u64 = 70;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("event {i}").as_bytes()))
            .collect()
    }

    /// Every perfect subtree of a tree of `MAX` leaves, as a store would hold them. Nodes never
    /// change once complete, so the same map serves every smaller tree.
    fn store() -> (Vec<Hash>, HashMap<NodeId, Hash>) {
        let leaves = leaves(MAX);
        let mut range = CompactRange::new();
        let mut nodes = HashMap::new();
        for leaf in &leaves {
            nodes.extend(range.append(*leaf));
        }
        (leaves, nodes)
    }

    /// RFC 6962 `PATH` and `PROOF` written as the RFC states them, over memoised range roots
    /// so that checking every proof of every size stays fast.
    struct Reference<'a> {
        leaves: &'a [Hash],
        roots: HashMap<(usize, usize), Hash>,
    }

    impl Reference<'_> {
        fn mth(&mut self, s: usize, e: usize) -> Hash {
            if let Some(h) = self.roots.get(&(s, e)) {
                return *h;
            }
            let h = match e - s {
                0 => empty_root(),
                1 => self.leaves[s],
                n => {
                    let k = split_point(n as u64) as usize;
                    node_hash(&self.mth(s, s + k), &self.mth(s + k, e))
                }
            };
            self.roots.insert((s, e), h);
            h
        }

        fn path(&mut self, m: usize, s: usize, e: usize) -> Vec<Hash> {
            if e - s <= 1 {
                return vec![];
            }
            let k = split_point((e - s) as u64) as usize;
            let (mut p, sibling) = if m < k {
                (self.path(m, s, s + k), self.mth(s + k, e))
            } else {
                (self.path(m - k, s + k, e), self.mth(s, s + k))
            };
            p.push(sibling);
            p
        }

        fn subproof(&mut self, m: usize, s: usize, e: usize, complete: bool) -> Vec<Hash> {
            let n = e - s;
            if m == n {
                return if complete {
                    vec![]
                } else {
                    vec![self.mth(s, e)]
                };
            }
            let k = split_point(n as u64) as usize;
            let (mut p, sibling) = if m <= k {
                (self.subproof(m, s, s + k, complete), self.mth(s + k, e))
            } else {
                (self.subproof(m - k, s + k, e, false), self.mth(s, s + k))
            };
            p.push(sibling);
            p
        }
    }

    fn flip(h: &Hash, bit: usize) -> Hash {
        let mut out = *h;
        out[bit / 8 % 32] ^= 1 << (bit % 8);
        out
    }

    #[test]
    fn known_vectors() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // RFC 6962 test vector: leaf hash of the empty string.
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn compact_range_matches_reference_roots_and_emits_every_node() {
        let leaves = leaves(MAX);
        assert_eq!(
            root_from_leaves(&leaves),
            Reference {
                leaves: &leaves,
                roots: HashMap::new()
            }
            .mth(0, leaves.len())
        );
        let mut reference = Reference {
            leaves: &leaves,
            roots: HashMap::new(),
        };
        let mut range = CompactRange::new();
        assert_eq!(range.root(), empty_root());
        let mut emitted = 0usize;
        for (i, leaf) in leaves.iter().enumerate() {
            let completed = range.append(*leaf);
            assert_eq!(completed[0], (NodeId::new(0, i as u64), *leaf));
            for (id, hash) in &completed {
                let (s, e) = (id.start() as usize, id.end() as usize);
                assert_eq!(*hash, reference.mth(s, e), "node {id}");
                assert_eq!(e, i + 1, "a completed node ends at the new leaf");
            }
            emitted += completed.len();
            let size = i as u64 + 1;
            assert_eq!(range.size(), size);
            assert_eq!(range.root(), reference.mth(0, i + 1), "size {size}");

            let ids = CompactRange::frontier_ids(size);
            let covered: u64 = ids.iter().map(|id| id.end() - id.start()).sum();
            assert_eq!(covered, size);
            let resumed = CompactRange::from_frontier(size, range.frontier().to_vec()).unwrap();
            assert_eq!(resumed, range);
        }
        // A tree of n leaves has 2n - 1 perfect-or-leaf nodes at most; exactly 2n - popcount(n).
        assert_eq!(emitted as u64, 2 * MAX - u64::from(MAX.count_ones()));
    }

    #[test]
    fn resumed_range_keeps_appending_correctly() {
        let leaves = leaves(23);
        let mut nodes = HashMap::new();
        let mut range = CompactRange::new();
        for leaf in &leaves[..13] {
            nodes.extend(range.append(*leaf));
        }
        let hashes = CompactRange::frontier_ids(13)
            .into_iter()
            .map(|id| nodes[&id])
            .collect();
        let mut resumed = CompactRange::from_frontier(13, hashes).unwrap();
        for leaf in &leaves[13..] {
            resumed.append(*leaf);
        }
        assert_eq!(resumed.root(), root_from_leaves(&leaves));
        assert!(matches!(
            CompactRange::from_frontier(13, vec![[0; 32]]),
            Err(MerkleError::FrontierMismatch {
                expected: 3,
                got: 1,
                ..
            })
        ));
    }

    #[test]
    fn inclusion_proofs_verify_for_every_leaf_of_every_size() {
        let (leaves, nodes) = store();
        let mut reference = Reference {
            leaves: &leaves,
            roots: HashMap::new(),
        };
        for size in 1..=MAX {
            let d = &leaves[..size as usize];
            let root = reference.mth(0, size as usize);
            for index in 0..size {
                let plan = inclusion_plan(index, size).unwrap();
                let proof = plan.assemble(|id| nodes.get(&id).copied()).unwrap();
                assert_eq!(
                    proof,
                    reference.path(index as usize, 0, size as usize),
                    "size {size} index {index}"
                );
                let leaf = &d[index as usize];
                assert!(
                    verify_inclusion(leaf, index, size, &proof, &root),
                    "size {size} index {index}"
                );

                if let Some(i) = (!proof.is_empty()).then(|| index as usize % proof.len()) {
                    let mut bad = proof.clone();
                    bad[i] = flip(&bad[i], 255);
                    assert!(!verify_inclusion(leaf, index, size, &bad, &root));
                }
                // The remaining forgeries exercise the same code paths for every size, so a
                // sample keeps the test quick in unoptimised builds.
                if (size + index) % 4 != 0 {
                    continue;
                }
                assert!(!verify_inclusion(
                    &flip(leaf, index as usize),
                    index,
                    size,
                    &proof,
                    &root
                ));
                assert!(!verify_inclusion(
                    leaf,
                    index,
                    size,
                    &proof,
                    &flip(&root, 3)
                ));
                if !proof.is_empty() {
                    assert!(!verify_inclusion(
                        leaf,
                        index,
                        size,
                        &proof[..proof.len() - 1],
                        &root
                    ));
                }
                let mut longer = proof.clone();
                longer.push(root);
                assert!(!verify_inclusion(leaf, index, size, &longer, &root));
                if size > 1 {
                    let other = (index + 1) % size;
                    assert!(!verify_inclusion(leaf, other, size, &proof, &root));
                }
            }
        }
    }

    #[test]
    fn inclusion_edge_cases() {
        assert_eq!(
            inclusion_plan(3, 3),
            Err(MerkleError::IndexOutOfRange { index: 3, size: 3 })
        );
        assert!(inclusion_plan(0, 0).is_err());
        let leaf = leaf_hash(b"only");
        assert!(inclusion_plan(0, 1).unwrap().elements.is_empty());
        assert!(verify_inclusion(&leaf, 0, 1, &[], &leaf));
        assert!(!verify_inclusion(&leaf, 1, 1, &[], &leaf));
        assert!(!verify_inclusion(&leaf, 0, 0, &[], &leaf));
        let plan = inclusion_plan(0, 2).unwrap();
        assert_eq!(
            plan.assemble(|_| None),
            Err(MerkleError::MissingNode(NodeId::new(0, 1)))
        );
    }

    #[test]
    fn consistency_proofs_verify_for_every_pair_of_sizes() {
        let (leaves, nodes) = store();
        let mut reference = Reference {
            leaves: &leaves,
            roots: HashMap::new(),
        };
        let roots: Vec<Hash> = (0..=MAX as usize).map(|n| reference.mth(0, n)).collect();
        for new_size in 1..=MAX {
            let new_root = &roots[new_size as usize];
            for old_size in 0..=new_size {
                let old_root = &roots[old_size as usize];
                let plan = consistency_plan(old_size, new_size).unwrap();
                let proof = plan.assemble(|id| nodes.get(&id).copied()).unwrap();
                if old_size > 0 {
                    let expected =
                        reference.subproof(old_size as usize, 0, new_size as usize, true);
                    assert_eq!(proof, expected, "{old_size}->{new_size}");
                }
                assert!(
                    verify_consistency(old_size, new_size, old_root, new_root, &proof),
                    "{old_size}->{new_size}"
                );
                if old_size == 0 {
                    continue;
                }
                if !proof.is_empty() {
                    let i = (old_size as usize) % proof.len();
                    let mut bad = proof.clone();
                    bad[i] = flip(&bad[i], 100);
                    assert!(!verify_consistency(
                        old_size, new_size, old_root, new_root, &bad
                    ));
                }
                if (old_size + new_size) % 4 != 0 {
                    continue;
                }
                assert!(!verify_consistency(
                    old_size,
                    new_size,
                    &flip(old_root, 7),
                    new_root,
                    &proof
                ));
                assert!(!verify_consistency(
                    old_size,
                    new_size,
                    old_root,
                    &flip(new_root, 9),
                    &proof
                ));
                if !proof.is_empty() {
                    assert!(!verify_consistency(
                        old_size,
                        new_size,
                        old_root,
                        new_root,
                        &proof[1..]
                    ));
                }
                if old_size < new_size && old_size > 1 {
                    let wrong = &roots[old_size as usize - 1];
                    assert!(!verify_consistency(
                        old_size, new_size, wrong, new_root, &proof
                    ));
                }
            }
        }
    }

    #[test]
    fn consistency_edge_cases() {
        assert_eq!(
            consistency_plan(5, 4),
            Err(MerkleError::SizesOutOfOrder {
                old_size: 5,
                new_size: 4
            })
        );
        let a = root_from_leaves(&leaves(4));
        let b = root_from_leaves(&leaves(5));
        assert!(verify_consistency(4, 4, &a, &a, &[]));
        assert!(!verify_consistency(4, 4, &a, &b, &[]));
        assert!(!verify_consistency(4, 4, &a, &a, &[a]));
        assert!(!verify_consistency(4, 5, &a, &b, &[]));
        assert!(!verify_consistency(5, 4, &b, &a, &[]));
        assert!(verify_consistency(0, 5, &empty_root(), &b, &[]));
        assert!(!verify_consistency(0, 5, &a, &b, &[]));
    }

    #[test]
    fn plan_lists_each_needed_node_once() {
        let plan = consistency_plan(6, 13).unwrap();
        let ids = plan.node_ids();
        let mut sorted = ids.clone();
        sorted.dedup();
        assert_eq!(ids, sorted);
        for nodes in &plan.elements {
            for id in nodes {
                assert!(ids.contains(id));
                assert!(id.end() <= 13);
            }
        }
    }
}
