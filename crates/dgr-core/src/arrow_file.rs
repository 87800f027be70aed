//! Typed Arrow IPC files: one record type per file, a format name and schema version in the
//! schema metadata, atomic writes and validating reads.
//!
//! Files are Arrow IPC *file* format (`.arrow`), readable as they are by pyarrow
//! (`pyarrow.ipc.open_file`), polars (`pl.read_ipc`) and DuckDB.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::{Field, Schema, SchemaRef};

use crate::atomic::AtomicFile;
use crate::error::{Error, Result};

/// Metadata key holding the record type (e.g. `dgr.corpus`).
pub const FORMAT_KEY: &str = "dgr.format";
/// Metadata key holding the schema version of that record type.
pub const VERSION_KEY: &str = "dgr.schema_version";
/// Metadata key holding the version of the program that wrote the file.
pub const WRITER_KEY: &str = "dgr.writer";

/// Rows per Arrow record batch: large enough to amortise per-batch cost, small enough that a
/// streaming import never holds more than a few MB of rows.
const BATCH_ROWS: usize = 4096;

/// A record type stored in its own Arrow file.
pub trait ArrowRecord: Sized {
    /// Value of [`FORMAT_KEY`].
    const FORMAT: &'static str;
    /// Value of [`VERSION_KEY`]; readers refuse other versions.
    const VERSION: u32;

    fn fields() -> Vec<Field>;

    /// Columns for `rows`, in the order of [`ArrowRecord::fields`].
    fn columns(rows: &[Self]) -> Vec<ArrayRef>;

    /// Decodes a batch whose schema has already been checked against [`ArrowRecord::fields`].
    /// `first_row` is the file row of the batch's first row, for error positions.
    fn from_batch(batch: &RecordBatch, path: &Path, first_row: u64) -> Result<Vec<Self>>;
}

pub fn schema_for<T: ArrowRecord>(extra_metadata: &[(&str, &str)]) -> SchemaRef {
    let mut metadata: HashMap<String, String> =
        extra_metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    metadata.insert(FORMAT_KEY.into(), T::FORMAT.into());
    metadata.insert(VERSION_KEY.into(), T::VERSION.to_string());
    metadata.insert(WRITER_KEY.into(), format!("dgr {}", env!("CARGO_PKG_VERSION")));
    Arc::new(Schema::new_with_metadata(T::fields(), metadata))
}

/// Streams records into an Arrow file; the file appears at its path only after [`finish`].
///
/// [`finish`]: RecordWriter::finish
pub struct RecordWriter<T: ArrowRecord> {
    file: AtomicFile,
    writer: FileWriter<BufWriter<File>>,
    schema: SchemaRef,
    pending: Vec<T>,
    rows: u64,
}

impl<T: ArrowRecord> RecordWriter<T> {
    /// `metadata` adds provenance entries (source, split, ...) to the schema metadata.
    pub fn create(path: &Path, metadata: &[(&str, &str)]) -> Result<Self> {
        let file = AtomicFile::create(path)?;
        let schema = schema_for::<T>(metadata);
        let writer = FileWriter::try_new(file.writer()?, &schema).map_err(|e| Error::arrow(path, e))?;
        Ok(RecordWriter { file, writer, schema, pending: Vec::with_capacity(BATCH_ROWS), rows: 0 })
    }

    pub fn push(&mut self, record: T) -> Result<()> {
        self.pending.push(record);
        if self.pending.len() >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows + self.pending.len() as u64
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = self.file.path().to_path_buf();
        let batch =
            RecordBatch::try_new(self.schema.clone(), T::columns(&self.pending)).map_err(|e| Error::arrow(&path, e))?;
        self.writer.write(&batch).map_err(|e| Error::arrow(&path, e))?;
        self.rows += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Writes the footer and renames the file into place; returns the number of rows.
    pub fn finish(mut self) -> Result<u64> {
        self.flush_batch()?;
        let path = self.file.path().to_path_buf();
        self.writer.finish().map_err(|e| Error::arrow(&path, e))?;
        let mut sink = self.writer.into_inner().map_err(|e| Error::arrow(&path, e))?;
        std::io::Write::flush(&mut sink).map_err(|e| Error::io(&path, "cannot write", e))?;
        drop(sink);
        self.file.commit()?;
        Ok(self.rows)
    }
}

/// Reads records batch by batch after checking format name, version and schema.
pub struct RecordReader<T: ArrowRecord> {
    path: PathBuf,
    reader: FileReader<File>,
    metadata: HashMap<String, String>,
    next_row: u64,
    _record: PhantomData<T>,
}

impl<T: ArrowRecord> RecordReader<T> {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, "cannot open", e))?;
        let reader = FileReader::try_new(file, None)
            .map_err(|e| Error::format(path, format!("not a readable Arrow IPC file ({e})")))?;
        let schema = reader.schema();
        check_schema::<T>(path, &schema)?;
        Ok(RecordReader {
            path: path.to_path_buf(),
            metadata: schema.metadata().clone().into(),
            reader,
            next_row: 0,
            _record: PhantomData,
        })
    }

    /// The schema metadata (format, version, provenance).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Number of record batches, from the file footer (for progress reporting).
    pub fn num_batches(&self) -> usize {
        self.reader.num_batches()
    }

    /// The next batch of records, `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<Vec<T>>> {
        match self.reader.next() {
            None => Ok(None),
            Some(Err(e)) => Err(Error::arrow(&self.path, e)),
            Some(Ok(batch)) => {
                let records = T::from_batch(&batch, &self.path, self.next_row)?;
                self.next_row += batch.num_rows() as u64;
                Ok(Some(records))
            }
        }
    }

    pub fn read_all(mut self) -> Result<Vec<T>> {
        let mut all = Vec::new();
        while let Some(batch) = self.next_batch()? {
            all.extend(batch);
        }
        Ok(all)
    }
}

/// Random access to the rows of a record file: a row is read from the one record batch that
/// holds it, so memory stays at one batch whatever the file's size (stage 1 draws passages of
/// the whole corpus in a shuffled order). The most recently read batch is kept for its
/// neighbours.
pub struct RowReader<T: ArrowRecord> {
    path: PathBuf,
    reader: FileReader<File>,
    /// The file row of each batch's first row, and the row count at the end.
    batch_starts: Vec<u64>,
    cached: Option<(usize, RecordBatch)>,
    _record: PhantomData<T>,
}

impl<T: ArrowRecord> RowReader<T> {
    /// Opens `path` for row reads; `batch_rows` holds the rows of each batch in file order, as a
    /// pass over the file with [`RecordReader`] counts them.
    pub fn open(path: &Path, batch_rows: &[u64]) -> Result<Self> {
        let records = RecordReader::<T>::open(path)?;
        if records.num_batches() != batch_rows.len() {
            return Err(Error::format(
                path,
                format!(
                    "has {} record batches, {} were counted: the file changed while in use",
                    records.num_batches(),
                    batch_rows.len()
                ),
            ));
        }
        let batch_starts = std::iter::once(0)
            .chain(batch_rows.iter().scan(0u64, |total, &rows| {
                *total += rows;
                Some(*total)
            }))
            .collect();
        Ok(RowReader {
            path: path.to_path_buf(),
            reader: records.reader,
            batch_starts,
            cached: None,
            _record: PhantomData,
        })
    }

    /// Rows in the file.
    pub fn rows(&self) -> u64 {
        self.batch_starts.last().copied().unwrap_or(0)
    }

    /// The record at file row `row` (0-based).
    pub fn get(&mut self, row: u64) -> Result<T> {
        if row >= self.rows() {
            return Err(Error::format(&self.path, format!("has {} rows, row {row} was asked for", self.rows())));
        }
        // The last batch whose first row is at or before `row`.
        let index = self.batch_starts.partition_point(|&start| start <= row) - 1;
        let batch = match &self.cached {
            Some((cached, batch)) if *cached == index => batch,
            _ => {
                self.reader.set_index(index).map_err(|e| Error::arrow(&self.path, e))?;
                let batch = match self.reader.next() {
                    Some(Ok(batch)) => batch,
                    Some(Err(e)) => return Err(Error::arrow(&self.path, e)),
                    None => return Err(Error::format(&self.path, format!("record batch {index} is missing"))),
                };
                let expected = self.batch_starts[index + 1] - self.batch_starts[index];
                if batch.num_rows() as u64 != expected {
                    return Err(Error::format(
                        &self.path,
                        format!("record batch {index} has {} rows, {expected} were counted", batch.num_rows()),
                    ));
                }
                &self.cached.insert((index, batch)).1
            }
        };
        let offset = row - self.batch_starts[index];
        let mut records = T::from_batch(&batch.slice(offset as usize, 1), &self.path, row)?;
        records.pop().ok_or_else(|| Error::format(&self.path, format!("row {row} could not be read")))
    }
}

/// Reads a whole file of records.
pub fn read_records<T: ArrowRecord>(path: &Path) -> Result<Vec<T>> {
    RecordReader::<T>::open(path)?.read_all()
}

/// Writes a whole file of records; returns the row count.
pub fn write_records<T: ArrowRecord>(
    path: &Path,
    metadata: &[(&str, &str)],
    records: impl IntoIterator<Item = T>,
) -> Result<u64> {
    let mut writer = RecordWriter::<T>::create(path, metadata)?;
    for record in records {
        writer.push(record)?;
    }
    writer.finish()
}

fn check_schema<T: ArrowRecord>(path: &Path, schema: &Schema) -> Result<()> {
    let found_format = schema.metadata().get(FORMAT_KEY);
    if found_format.map(String::as_str) != Some(T::FORMAT) {
        return Err(Error::format(
            path,
            match found_format {
                Some(f) => format!("holds `{f}` records, expected `{}`", T::FORMAT),
                None => format!("has no `{FORMAT_KEY}` schema metadata: not a dgr `{}` file", T::FORMAT),
            },
        ));
    }
    let version = schema.metadata().get(VERSION_KEY);
    if version.map(String::as_str) != Some(T::VERSION.to_string().as_str()) {
        return Err(Error::format(
            path,
            format!(
                "`{}` schema version {} is not supported (this program reads version {})",
                T::FORMAT,
                version.map(String::as_str).unwrap_or("<missing>"),
                T::VERSION
            ),
        ));
    }
    for expected in T::fields() {
        let found = schema
            .field_with_name(expected.name())
            .map_err(|_| Error::format(path, format!("missing column `{}`", expected.name())))?;
        if found.data_type() != expected.data_type() {
            return Err(Error::format(
                path,
                format!(
                    "column `{}` has type {}, expected {}",
                    expected.name(),
                    found.data_type(),
                    expected.data_type()
                ),
            ));
        }
    }
    Ok(())
}

/// Typed access to a batch's columns with null checks; errors name file, row and column.
pub struct BatchColumns<'a> {
    pub batch: &'a RecordBatch,
    pub path: &'a Path,
    pub first_row: u64,
}

impl<'a> BatchColumns<'a> {
    pub fn column(&self, name: &str) -> Result<&'a ArrayRef> {
        self.batch.column_by_name(name).ok_or_else(|| Error::format(self.path, format!("missing column `{name}`")))
    }

    /// A non-null string column.
    pub fn strings(&self, name: &str) -> Result<&'a arrow_array::StringArray> {
        let col = self.column(name)?;
        let strings = col
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .ok_or_else(|| Error::format(self.path, format!("column `{name}` is not utf8")))?;
        self.no_nulls(name, strings)?;
        Ok(strings)
    }

    /// Rows of a non-null `List<primitive>` column.
    pub fn primitive_lists<T: arrow_array::ArrowPrimitiveType>(&self, name: &str) -> Result<Vec<Vec<T::Native>>> {
        primitive_lists::<T>(self.column(name)?, self.path, name)
    }

    /// A non-null list-of-strings column (the lists may be empty).
    pub fn string_lists(&self, name: &str) -> Result<StringLists<'a>> {
        let col = self.column(name)?;
        let lists = col
            .as_any()
            .downcast_ref::<arrow_array::ListArray>()
            .ok_or_else(|| Error::format(self.path, format!("column `{name}` is not a list")))?;
        self.no_nulls(name, lists)?;
        let values = lists
            .values()
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .ok_or_else(|| Error::format(self.path, format!("column `{name}` is not a list of utf8")))?;
        self.no_nulls(name, values)?;
        Ok(StringLists { lists, values })
    }

    fn no_nulls(&self, name: &str, array: &dyn Array) -> Result<()> {
        if array.null_count() == 0 {
            return Ok(());
        }
        let row = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0) as u64;
        Err(Error::input(self.path, crate::error::Position::Row(self.first_row + row), name, "is null", ""))
    }
}

/// A validated `List<Utf8>` column.
pub struct StringLists<'a> {
    lists: &'a arrow_array::ListArray,
    values: &'a arrow_array::StringArray,
}

impl StringLists<'_> {
    pub fn get(&self, row: usize) -> Vec<String> {
        let offsets = self.lists.value_offsets();
        (offsets[row] as usize..offsets[row + 1] as usize).map(|i| self.values.value(i).to_string()).collect()
    }
}

/// Builds a non-null `List<Utf8>` column.
pub fn string_list_column<'a>(rows: impl Iterator<Item = &'a [String]>) -> ArrayRef {
    let mut builder = arrow_array::builder::ListBuilder::new(arrow_array::builder::StringBuilder::new())
        .with_field(list_item(arrow_schema::DataType::Utf8));
    for row in rows {
        for value in row {
            builder.values().append_value(value);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

/// The Arrow type of a `List<Utf8>` column as dgr writes it.
pub fn string_list_type() -> arrow_schema::DataType {
    list_of(arrow_schema::DataType::Utf8)
}

/// The non-null item field of a list column as dgr writes it.
pub fn list_item(data_type: arrow_schema::DataType) -> Arc<Field> {
    Arc::new(Field::new_list_field(data_type, false))
}

/// `List<data_type>` with non-null items.
pub fn list_of(data_type: arrow_schema::DataType) -> arrow_schema::DataType {
    arrow_schema::DataType::List(list_item(data_type))
}

/// Builds a non-null `List<primitive>` column.
pub fn primitive_list_column<T: arrow_array::ArrowPrimitiveType>(
    rows: impl Iterator<Item = Vec<T::Native>>,
    item_type: arrow_schema::DataType,
) -> ArrayRef {
    let mut builder = arrow_array::builder::ListBuilder::new(arrow_array::builder::PrimitiveBuilder::<T>::new())
        .with_field(list_item(item_type));
    for row in rows {
        builder.values().append_slice(&row);
        builder.append(true);
    }
    Arc::new(builder.finish())
}

/// A list column with neither null lists nor null items.
pub fn as_list<'a>(array: &'a dyn Array, path: &Path, name: &str) -> Result<&'a arrow_array::ListArray> {
    let list = array
        .as_any()
        .downcast_ref::<arrow_array::ListArray>()
        .ok_or_else(|| Error::format(path, format!("column `{name}` is not a list")))?;
    if list.null_count() > 0 || list.values().null_count() > 0 {
        return Err(Error::format(path, format!("column `{name}` has nulls")));
    }
    Ok(list)
}

/// Rows of a non-null `List<primitive>` column.
pub fn primitive_lists<T: arrow_array::ArrowPrimitiveType>(
    array: &ArrayRef,
    path: &Path,
    name: &str,
) -> Result<Vec<Vec<T::Native>>> {
    let list = as_list(array.as_ref(), path, name)?;
    let values = list
        .values()
        .as_any()
        .downcast_ref::<arrow_array::PrimitiveArray<T>>()
        .ok_or_else(|| Error::format(path, format!("column `{name}` has the wrong item type")))?;
    let offsets = list.value_offsets();
    Ok((0..list.len()).map(|r| values.values()[offsets[r] as usize..offsets[r + 1] as usize].to_vec()).collect())
}
