//! The student's identifier views (method §1) and the markers that delimit identifiers in the
//! indexed passage text (method §2). Training pairs, the index layout and constrained decoding
//! must agree on these strings, so they live here once.

/// Closes a title (and a pseudo-query in the index layout).
pub const END_MARK: &str = "@@";
/// Opens a pseudo-query in the index layout.
pub const PSEUDO_QUERY_MARK: &str = "||";

/// Which kind of identifier the decoder is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum View {
    Title,
    Body,
    PseudoQuery,
}

impl View {
    pub const ALL: [View; 3] = [View::Title, View::Body, View::PseudoQuery];

    /// The prompt suffix that selects this view on the source side.
    pub fn prompt(self) -> &'static str {
        match self {
            View::Title => "|| title || +",
            View::Body => "|| body || +",
            View::PseudoQuery => "|| query || +",
        }
    }

    /// The encoder input asking for this view of `text`.
    pub fn source(self, text: &str) -> String {
        format!("{} {}", text.trim(), self.prompt())
    }

    pub fn name(self) -> &'static str {
        match self {
            View::Title => "title",
            View::Body => "body",
            View::PseudoQuery => "pseudo-query",
        }
    }
}
