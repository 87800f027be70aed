//! DPR's answer matching: Unicode NFD, then the `SimpleTokenizer` token pattern
//! (runs of letters/digits/marks, or any single other non-space, non-control character),
//! lower-cased; an answer matches if its tokens occur contiguously in the passage's tokens.
//!
//! One deliberate difference: DPR finds an empty answer (no tokens) in every passage; here an
//! empty answer matches nothing.

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

pub struct AnswerMatcher {
    token: Regex,
}

impl Default for AnswerMatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl AnswerMatcher {
    pub fn new() -> Self {
        // ok: a constant pattern, checked by the tests.
        let token = Regex::new(r"[\p{L}\p{N}\p{M}]+|[^\p{Z}\p{C}]").expect("valid token pattern");
        AnswerMatcher { token }
    }

    /// Normalised, lower-cased tokens of `text`.
    pub fn tokens(&self, text: &str) -> Vec<String> {
        let normalized: String = text.nfd().collect();
        self.token.find_iter(&normalized).map(|m| m.as_str().to_lowercase()).collect()
    }

    /// Whether any of the (pre-tokenised) answers occurs in `text`.
    pub fn contains_any(&self, text: &str, answers: &[Vec<String>]) -> bool {
        let tokens = self.tokens(text);
        answers
            .iter()
            .any(|answer| !answer.is_empty() && tokens.windows(answer.len()).any(|window| window == answer.as_slice()))
    }
}

/// Whether `text` contains any of `answers` under DPR's normalisation.
pub fn has_answer(answers: &[String], text: &str) -> bool {
    let matcher = AnswerMatcher::new();
    let answer_tokens: Vec<Vec<String>> = answers.iter().map(|a| matcher.tokens(a)).collect();
    matcher.contains_any(text, &answer_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_whole_tokens_case_and_accent_insensitively_in_nfd() {
        let text = "Wilhelm Conrad Röntgen won the first Nobel Prize in Physics (1901).";
        assert!(has_answer(&["wilhelm conrad röntgen".into()], text));
        assert!(has_answer(&["1901".into()], text));
        assert!(has_answer(&["(1901)".into()], text));
        // Token boundaries matter: "Röntgen" is one token, "Rönt" is not in the passage.
        assert!(!has_answer(&["Rönt".into()], text));
        assert!(!has_answer(&["1902".into(), "".into()], text));
        // NFC input matches NFD text (and vice versa).
        let nfd: String = "Ro\u{0308}ntgen".into();
        assert!(has_answer(&[nfd], text));
    }
}
