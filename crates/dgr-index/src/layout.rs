//! How a passage is written out for the index (MINDER's layout, method §2): the title closed by
//! `@@`, the body, then each pseudo-query behind `||` and closed by `@@`. All three identifier
//! views of the student are substrings of this text, so one index constrains all of them.

use dgr_core::Passage;

pub use dgr_core::views::{END_MARK, PSEUDO_QUERY_MARK};

/// `title @@ body || pq1 @@ || pq2 @@ ...` (the title part is left out when there is no title).
pub fn passage_layout(passage: &Passage) -> String {
    let mut out = String::new();
    let title = passage.title.trim();
    if !title.is_empty() {
        out.push_str(title);
        out.push(' ');
        out.push_str(END_MARK);
        out.push(' ');
    }
    out.push_str(passage.text.trim());
    for pq in &passage.pseudo_queries {
        out.push(' ');
        out.push_str(PSEUDO_QUERY_MARK);
        out.push(' ');
        out.push_str(pq.trim());
        out.push(' ');
        out.push_str(END_MARK);
    }
    out
}
