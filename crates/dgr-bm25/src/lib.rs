//! dgr-bm25: the BM25 baseline over a dgr corpus, on tantivy.
//!
//! A passage is indexed as `title` + newline + `text` in one field with tantivy's default
//! analyzer (split on non-alphanumeric characters, lower-case, drop tokens over 40 bytes);
//! scoring is tantivy's BM25 (k1 = 1.2, b = 0.75). A query is the disjunction of its analysed
//! tokens, repeated tokens counted again, as in `rank_bm25`.
//!
//! The index directory holds tantivy's files and `bm25.json` (format name, version, corpus
//! checksum, document count), written last; the directory is built under a temporary name.
//!
//! ```no_run
//! use std::path::Path;
//! let index = dgr_bm25::Bm25Index::open(Path::new("work/demo/bm25"))?;
//! let top = index.search("1968 film by Stanley Kubrick", 10)?;
//! # Ok::<(), dgr_bm25::Bm25Error>(())
//! ```

use std::path::{Path, PathBuf};

use dgr_core::arrow_file::RecordReader;
use dgr_core::atomic::{StagingDir, write_atomic};
use dgr_core::import::sha256_file;
use dgr_core::progress::{Progress, Unit};
use dgr_core::trec::{Run, ScoredDoc};
use dgr_core::{Passage, Query};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Index, IndexReader, TantivyDocument, Term};

pub const MANIFEST_FILE: &str = "bm25.json";
const MANIFEST_FORMAT: &str = "dgr.bm25-index";
const MANIFEST_VERSION: u32 = 1;
/// tantivy refuses less than 15 MB of indexing memory per thread.
const MIN_MEMORY_PER_THREAD_MB: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum Bm25Error {
    #[error(transparent)]
    Core(#[from] dgr_core::Error),
    #[error("{path}: {action}")]
    Tantivy {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: tantivy::TantivyError,
    },
    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },
}

pub type Result<T, E = Bm25Error> = std::result::Result<T, E>;

fn tantivy_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(tantivy::TantivyError) -> Bm25Error + 'a {
    move |source| Bm25Error::Tantivy { path: path.to_path_buf(), action, source }
}

/// The manifest of an index directory.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bm25Manifest {
    pub format: String,
    pub schema_version: u32,
    pub writer: String,
    /// Corpus file the index was built from, and its sha256.
    pub corpus: String,
    pub corpus_sha256: String,
    pub documents: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct IndexOptions {
    /// Indexing threads; 0 = available cores.
    pub threads: usize,
    /// Indexing memory in MB for all threads together.
    pub memory_mb: usize,
}

fn thread_count(requested: usize) -> usize {
    if requested > 0 { requested } else { std::thread::available_parallelism().map_or(1, |n| n.get()) }
}

struct Fields {
    id: Field,
    body: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let id = builder.add_text_field("id", STRING | STORED);
    let body_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default().set_tokenizer("default").set_index_option(IndexRecordOption::WithFreqs),
    );
    let body = builder.add_text_field("body", body_options);
    (builder.build(), Fields { id, body })
}

/// Builds the index of `corpus` (a `corpus.arrow` file) into `index_dir`, replacing it.
pub fn build_index(
    corpus: &Path,
    index_dir: &Path,
    options: IndexOptions,
    progress: &dyn Progress,
) -> Result<Bm25Manifest> {
    let mut reader = RecordReader::<Passage>::open(corpus)?;
    let (_, corpus_sha256) = sha256_file(corpus)?;
    let staging = StagingDir::create(index_dir, true)?;
    let (schema, fields) = schema();
    let index = Index::create_in_dir(staging.path(), schema).map_err(tantivy_err(index_dir, "cannot create index"))?;
    let threads = thread_count(options.threads).min(8);
    let memory = options.memory_mb.max(threads * MIN_MEMORY_PER_THREAD_MB) * 1_000_000;
    let mut writer = index
        .writer_with_num_threads::<TantivyDocument>(threads, memory)
        .map_err(tantivy_err(index_dir, "cannot start index writer"))?;

    progress.begin("bm25 index", reader.num_batches() as u64, Unit::Items);
    let mut documents = 0u64;
    let mut body = String::new();
    while let Some(batch) = reader.next_batch()? {
        for passage in batch {
            body.clear();
            body.push_str(&passage.title);
            body.push('\n');
            body.push_str(&passage.text);
            let mut doc = TantivyDocument::default();
            doc.add_text(fields.id, &passage.id);
            doc.add_text(fields.body, &body);
            writer.add_document(doc).map_err(tantivy_err(index_dir, "cannot add document"))?;
            documents += 1;
        }
        progress.advance(1);
    }
    writer.commit().map_err(tantivy_err(index_dir, "cannot commit index"))?;
    writer.wait_merging_threads().map_err(tantivy_err(index_dir, "cannot finish merges"))?;
    progress.finish();

    let manifest = Bm25Manifest {
        format: MANIFEST_FORMAT.into(),
        schema_version: MANIFEST_VERSION,
        writer: format!("dgr {}", env!("CARGO_PKG_VERSION")),
        corpus: corpus.display().to_string(),
        corpus_sha256,
        documents,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Bm25Error::Manifest { path: index_dir.join(MANIFEST_FILE), message: e.to_string() })?;
    write_atomic(&staging.path().join(MANIFEST_FILE), &json)?;
    staging.commit()?;
    Ok(manifest)
}

/// An opened index, ready for concurrent searches.
pub struct Bm25Index {
    path: PathBuf,
    manifest: Bm25Manifest,
    reader: IndexReader,
    analyzer: TextAnalyzer,
    fields: Fields,
}

impl Bm25Index {
    pub fn open(index_dir: &Path) -> Result<Self> {
        let manifest_path = index_dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
            dgr_core::Error::io(&manifest_path, "cannot read BM25 index manifest (was `dgr bm25 index` run?)", e)
        })?;
        let manifest: Bm25Manifest = serde_json::from_str(&text).map_err(|e| Bm25Error::Manifest {
            path: manifest_path.clone(),
            message: format!("invalid manifest: {e}"),
        })?;
        if manifest.format != MANIFEST_FORMAT || manifest.schema_version != MANIFEST_VERSION {
            return Err(Bm25Error::Manifest {
                path: manifest_path,
                message: format!(
                    "is `{}` version {}, this program reads `{MANIFEST_FORMAT}` version {MANIFEST_VERSION}",
                    manifest.format, manifest.schema_version
                ),
            });
        }
        let index = Index::open_in_dir(index_dir).map_err(tantivy_err(index_dir, "cannot open index"))?;
        let (_, fields) = schema();
        if index.schema() != schema().0 {
            return Err(Bm25Error::Manifest {
                path: index_dir.to_path_buf(),
                message: "index schema differs from the one this program writes".into(),
            });
        }
        let analyzer =
            index.tokenizer_for_field(fields.body).map_err(tantivy_err(index_dir, "cannot load analyzer"))?;
        let reader = index.reader().map_err(tantivy_err(index_dir, "cannot open index reader"))?;
        Ok(Bm25Index { path: index_dir.to_path_buf(), manifest, reader, analyzer, fields })
    }

    pub fn manifest(&self) -> &Bm25Manifest {
        &self.manifest
    }

    /// The top `k` passages for `text`, best first (ties by passage id, descending).
    pub fn search(&self, text: &str, k: usize) -> Result<Vec<ScoredDoc>> {
        let mut analyzer = self.analyzer.clone();
        self.search_with(&mut analyzer, text, k)
    }

    fn search_with(&self, analyzer: &mut TextAnalyzer, text: &str, k: usize) -> Result<Vec<ScoredDoc>> {
        let mut clauses: Vec<(Occur, Box<dyn tantivy::query::Query>)> = Vec::new();
        let mut stream = analyzer.token_stream(text);
        while stream.advance() {
            let term = Term::from_field_text(self.fields.body, &stream.token().text);
            clauses.push((Occur::Should, Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))));
        }
        if clauses.is_empty() {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let query = BooleanQuery::new(clauses);
        let top = searcher
            .search(&query, &TopDocs::with_limit(k).order_by_score())
            .map_err(tantivy_err(&self.path, "search failed"))?;
        let mut docs = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument =
                searcher.doc(address).map_err(tantivy_err(&self.path, "cannot read stored document"))?;
            let id = doc.get_first(self.fields.id).and_then(|v| v.as_str()).unwrap_or_default();
            docs.push(ScoredDoc { doc_id: id.to_string(), score: f64::from(score) });
        }
        docs.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| b.doc_id.cmp(&a.doc_id)));
        Ok(docs)
    }

    /// Searches every query on `threads` threads (0 = all cores) and returns the run.
    pub fn search_all(&self, queries: &[Query], k: usize, threads: usize, progress: &dyn Progress) -> Result<Run> {
        let threads = thread_count(threads).min(queries.len().max(1));
        let chunk = queries.len().div_ceil(threads).max(1);
        progress.begin("bm25 search", queries.len() as u64, Unit::Items);
        type Rankings = Vec<(String, Vec<ScoredDoc>)>;
        let results: Vec<Result<Rankings>> = std::thread::scope(|scope| {
            let handles: Vec<_> = queries
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        let mut analyzer = self.analyzer.clone();
                        let mut out = Vec::with_capacity(part.len());
                        for query in part {
                            out.push((query.id.clone(), self.search_with(&mut analyzer, &query.text, k)?));
                            progress.advance(1);
                        }
                        Ok(out)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
        });
        progress.finish();
        let mut run = Run::default();
        for part in results {
            run.rankings.extend(part?);
        }
        Ok(run)
    }
}
