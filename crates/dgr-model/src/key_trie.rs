//! Keys laid out as a token tree for one teacher-forced pass (method §4 scores every key).
//!
//! The keys a query's passages carry overlap heavily: every beam prefix is a key, beams share
//! their first tokens, and one key may back several passages. Decoding each key as its own row
//! repeats the work of every shared prefix. Here each distinct prefix that some longer key
//! extends is fed to the decoder once, at the position of its depth, attending only to its
//! ancestors; a key's log-probability is the sum of its tokens' log-probabilities, each read
//! off its parent's output. A leaf (a prefix nothing extends) costs no decoder position at all.

/// Decoder positions per row: subtrees of the root are packed into rows of about this many
/// positions, so attention (quadratic in a row's length) stays small beside the logits.
pub const ROW_POSITIONS: usize = 256;

/// The decoder input of one pass: rows of `[start, nodes…]`, and for every key the positions
/// its tokens are read from.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyTrie {
    /// Per row and position: the input token (position 0 is the start token).
    pub tokens: Vec<Vec<u32>>,
    /// Per row and position: the depth, which is the decoder position id (start = 0).
    pub depths: Vec<Vec<usize>>,
    /// Per row and position: the position of its parent in the row (the start's is itself).
    pub parents: Vec<Vec<usize>>,
    /// Every token to score once: (row, position whose output predicts it, token).
    pub picks: Vec<(usize, usize, u32)>,
    /// Per key: the indices into `picks` of its tokens (empty for an empty key).
    pub paths: Vec<Vec<usize>>,
}

/// A distinct prefix while the tree is built.
struct Node {
    token: u32,
    parent: Option<usize>,
    depth: usize,
    has_children: bool,
    /// The subtree of the root's child it belongs to (the index of that child).
    subtree: usize,
}

impl KeyTrie {
    pub fn new(keys: &[Vec<u32>], start: u32) -> Self {
        // Distinct prefixes in pre-order: in sorted order, a key shares with the keys before it
        // exactly the prefix it shares with the one right before it.
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
        let mut nodes: Vec<Node> = Vec::new();
        let mut key_nodes: Vec<Vec<usize>> = vec![Vec::new(); keys.len()];
        let mut path: Vec<usize> = Vec::new();
        let mut previous: &[u32] = &[];
        for &k in &order {
            let key = &keys[k];
            let shared = key.iter().zip(previous).take_while(|(a, b)| a == b).count();
            path.truncate(shared);
            for (depth, &token) in key.iter().enumerate().skip(shared) {
                let parent = path.last().copied();
                if let Some(p) = parent {
                    nodes[p].has_children = true;
                }
                let subtree = parent.map_or(nodes.len(), |p| nodes[p].subtree);
                path.push(nodes.len());
                nodes.push(Node { token, parent, depth: depth + 1, has_children: false, subtree });
            }
            key_nodes[k] = path.clone();
            previous = key;
        }

        // Rows: whole subtrees of the root, in order, while they fit; each row starts with the
        // start token, and holds the subtree's inner nodes (parents before children).
        let mut tokens: Vec<Vec<u32>> = vec![vec![start]];
        let mut depths: Vec<Vec<usize>> = vec![vec![0]];
        let mut parents: Vec<Vec<usize>> = vec![vec![0]];
        // Per inner node: the position of its own input in its row (its subtree's row).
        let mut slot: Vec<usize> = vec![0; nodes.len()];
        // The position whose output predicts a node: its parent's input, or the start token.
        let read_at = |node: &Node, slot: &[usize]| node.parent.map_or(0, |p| slot[p]);
        let mut subtree_row: Vec<usize> = vec![0; nodes.len()];
        let inner_per_subtree = {
            let mut counts = vec![0usize; nodes.len()];
            for node in nodes.iter().filter(|n| n.has_children) {
                counts[node.subtree] += 1;
            }
            counts
        };
        for (i, node) in nodes.iter().enumerate() {
            if node.parent.is_none() {
                let row = tokens.len() - 1;
                let needed = inner_per_subtree[i];
                if needed > 0 && tokens[row].len() > 1 && tokens[row].len() + needed > ROW_POSITIONS {
                    tokens.push(vec![start]);
                    depths.push(vec![0]);
                    parents.push(vec![0]);
                }
                subtree_row[i] = tokens.len() - 1;
            }
            let row = subtree_row[node.subtree];
            if node.has_children {
                parents[row].push(read_at(node, &slot));
                slot[i] = tokens[row].len();
                tokens[row].push(node.token);
                depths[row].push(node.depth);
            }
        }

        let picks: Vec<(usize, usize, u32)> =
            nodes.iter().map(|node| (subtree_row[node.subtree], read_at(node, &slot), node.token)).collect();
        KeyTrie { tokens, depths, parents, picks, paths: key_nodes }
    }

    /// Positions of the longest row; every row is padded to it.
    pub fn length(&self) -> usize {
        self.tokens.iter().map(Vec::len).max().unwrap_or(1)
    }

    /// Decoder positions computed (rows × padded length).
    pub fn positions(&self) -> usize {
        self.tokens.len() * self.length()
    }

    /// `[rows, length, length]`, row-major: true where a position may not attend to another.
    /// A node sees itself and its ancestors; padding sees the start token and itself.
    pub fn hidden(&self) -> Vec<bool> {
        let length = self.length();
        let mut hidden = vec![true; self.tokens.len() * length * length];
        for (row, parents) in self.parents.iter().enumerate() {
            for query in 0..length {
                let at = |key: usize| (row * length + query) * length + key;
                hidden[at(0)] = false;
                hidden[at(query)] = false;
                let mut position = query;
                while position < parents.len() && position != 0 {
                    hidden[at(position)] = false;
                    position = parents[position];
                }
            }
        }
        hidden
    }
}
