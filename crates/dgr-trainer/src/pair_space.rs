//! Every stage-1 pair of a run, numbered and drawn only when a step asks for it, so that memory
//! and the time before the first step do not grow with the corpus (a 21M-passage corpus has
//! some 300M pairs).
//!
//! Pairs come in units: one per judged (query, relevant passage), then, with SEAL's indexing
//! pairs on, one per passage of the corpus. A unit has a fixed number of slots, set by the
//! [`PairConfig`] counts and its passage's [`Shape`], and slot `k` of a unit is always the same
//! kind of pair (the title pairs, then the spans, ...; [`crate::pairs`]). A pass over the corpus
//! at the start keeps each passage's shape (two bytes) and the rows of the judged passages. Pair
//! `i` is found through the slots before every [`BLOCK`]-th unit, then drawn from its passage,
//! read by row, with a generator of its own, seeded by `(seed, i)`. So pair `i` is the same
//! pair in every epoch, on any rank and world size and after a resume: the pairs of a run are
//! fixed by its seed, as a list built once would be, without being held.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use dgr_core::Passage;
use dgr_core::arrow_file::{RecordReader, RowReader};

use crate::engine::{PAIR_DRAWS, TrainError, stream};
use crate::pairs::{PairConfig, Shape, TrainingPair, indexing_pair, indexing_slots, supervised_pair, supervised_slots};

/// Units between two stored slot counts: a lookup walks at most this many units.
pub const BLOCK: usize = 1024;

/// Passages by corpus row.
pub trait PassageSource {
    fn passage(&mut self, row: u64) -> Result<Passage, TrainError>;
}

impl PassageSource for RowReader<Passage> {
    fn passage(&mut self, row: u64) -> Result<Passage, TrainError> {
        Ok(self.get(row)?)
    }
}

impl PassageSource for Vec<Passage> {
    fn passage(&mut self, row: u64) -> Result<Passage, TrainError> {
        self.get(row as usize).cloned().ok_or_else(|| TrainError::Input(format!("no passage at row {row}")))
    }
}

/// What one pass over the corpus file keeps: each passage's shape, the rows of the passages
/// asked for by id, and the rows of each record batch (for [`RowReader`]).
pub struct CorpusScan {
    pub shapes: Vec<Shape>,
    pub rows: HashMap<String, u64>,
    pub batch_rows: Vec<u64>,
}

impl CorpusScan {
    /// Reads `corpus.arrow` batch by batch, keeping the rows of the ids in `wanted`.
    pub fn read(path: &Path, wanted: &HashSet<&str>) -> Result<CorpusScan, TrainError> {
        let mut reader = RecordReader::<Passage>::open(path)?;
        let mut scan = CorpusScan { shapes: Vec::new(), rows: HashMap::new(), batch_rows: Vec::new() };
        while let Some(batch) = reader.next_batch()? {
            scan.batch_rows.push(batch.len() as u64);
            Self::add(&mut scan, &batch, wanted);
        }
        Ok(scan)
    }

    /// The same from passages in memory (tests, small corpora).
    pub fn of(corpus: &[Passage], wanted: &HashSet<&str>) -> CorpusScan {
        let mut scan = CorpusScan { shapes: Vec::new(), rows: HashMap::new(), batch_rows: vec![corpus.len() as u64] };
        Self::add(&mut scan, corpus, wanted);
        scan
    }

    fn add(scan: &mut CorpusScan, passages: &[Passage], wanted: &HashSet<&str>) {
        for passage in passages {
            if wanted.contains(passage.id.as_str()) {
                scan.rows.insert(passage.id.clone(), scan.shapes.len() as u64);
            }
            scan.shapes.push(Shape::of(passage));
        }
    }
}

/// A judged (query, relevant passage) unit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Judged {
    query: String,
    row: u64,
}

/// The numbered pairs of a stage-1 run (see the module documentation).
pub struct PairSpace {
    config: PairConfig,
    judged: Vec<Judged>,
    shapes: Vec<Shape>,
    /// Slots before unit `b * BLOCK`, for each `b`.
    block_starts: Vec<u64>,
    pairs: u64,
}

impl PairSpace {
    /// The pairs of `judged` (query text, relevant passage ids, in order) over the corpus `scan`
    /// saw. Relevant ids the corpus lacks are returned, for the caller to report.
    pub fn new(
        config: PairConfig,
        judged: impl IntoIterator<Item = (String, Vec<String>)>,
        scan: CorpusScan,
    ) -> (PairSpace, Vec<String>) {
        let mut units = Vec::new();
        let mut unknown = Vec::new();
        for (query, ids) in judged {
            for id in ids {
                match scan.rows.get(&id) {
                    Some(&row) => units.push(Judged { query: query.clone(), row }),
                    None => unknown.push(id),
                }
            }
        }
        let mut space = PairSpace { config, judged: units, shapes: scan.shapes, block_starts: Vec::new(), pairs: 0 };
        for unit in 0..space.units() {
            if unit % BLOCK == 0 {
                space.block_starts.push(space.pairs);
            }
            space.pairs += space.slots(unit);
        }
        (space, unknown)
    }

    /// Pairs in all (the examples an epoch goes through).
    pub fn pairs(&self) -> u64 {
        self.pairs
    }

    /// Judged (query, relevant passage) units.
    pub fn judged_units(&self) -> usize {
        self.judged.len()
    }

    fn units(&self) -> usize {
        self.judged.len() + if self.config.unsupervised { self.shapes.len() } else { 0 }
    }

    fn slots(&self, unit: usize) -> u64 {
        match self.judged.get(unit) {
            Some(judged) => supervised_slots(self.shapes[judged.row as usize], &self.config),
            None => indexing_slots(self.shapes[unit - self.judged.len()], &self.config),
        }
    }

    /// The unit pair `index` belongs to and its slot there.
    fn locate(&self, index: u64) -> (usize, u64) {
        let block = self.block_starts.partition_point(|&start| start <= index).saturating_sub(1);
        let (mut unit, mut first) = (block * BLOCK, self.block_starts.get(block).copied().unwrap_or(0));
        loop {
            let slots = self.slots(unit);
            if index < first + slots {
                return (unit, index - first);
            }
            first += slots;
            unit += 1;
        }
    }

    /// Pair `index` (below [`PairSpace::pairs`]), its passage read from `corpus`.
    pub fn pair(&self, index: u64, corpus: &mut dyn PassageSource) -> Result<TrainingPair, TrainError> {
        if index >= self.pairs {
            return Err(TrainError::Input(format!("pair {index} asked for; there are {}", self.pairs)));
        }
        let (unit, slot) = self.locate(index);
        let rng = &mut stream(self.config.seed, PAIR_DRAWS, index);
        Ok(match self.judged.get(unit) {
            Some(judged) => supervised_pair(&judged.query, &corpus.passage(judged.row)?, slot, &self.config, rng),
            None => indexing_pair(&corpus.passage((unit - self.judged.len()) as u64)?, slot, &self.config, rng),
        })
    }
}

/// The numbered pairs a stage-1 objective trains on.
pub trait PairSource {
    fn pairs(&self) -> u64;
    fn pair(&mut self, index: u64) -> Result<TrainingPair, TrainError>;
}

/// Pairs listed in advance (tests).
impl PairSource for Vec<TrainingPair> {
    fn pairs(&self) -> u64 {
        self.len() as u64
    }

    fn pair(&mut self, index: u64) -> Result<TrainingPair, TrainError> {
        self.get(index as usize).cloned().ok_or_else(|| TrainError::Input(format!("no pair {index}")))
    }
}

/// A [`PairSpace`] with the corpus its passages are read from.
pub struct StreamedPairs<C: PassageSource> {
    pub space: PairSpace,
    pub corpus: C,
}

impl<C: PassageSource> PairSource for StreamedPairs<C> {
    fn pairs(&self) -> u64 {
        self.space.pairs()
    }

    fn pair(&mut self, index: u64) -> Result<TrainingPair, TrainError> {
        self.space.pair(index, &mut self.corpus)
    }
}
