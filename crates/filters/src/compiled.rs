//! One filter list (a column's include or exclude values) compiled into automata, so that a
//! text is tested against all the values at once instead of one value after the other.
//!
//! Each value is sorted by its shape once, at compile time:
//! - no wildcard: a hash map keyed by the folded text;
//! - `prefix*`: one Aho-Corasick automaton (a compact trie), searched anchored at the start;
//! - `*suffix`: one DFA built from the reversed literals, searched anchored backwards from the
//!   end of the text (so the text is never reversed or copied);
//! - `*substring*`: one Aho-Corasick automaton, searched unanchored;
//! - anything else (`?`, a `*` inside): one multi-pattern DFA of `\A...\z` patterns, `*` as
//!   `.*` and `?` as `.`, newlines included (the meta regex, a lazy DFA, when a full DFA would
//!   exceed its size limit);
//! - only stars: matches every text, no automaton needed.
//!
//! Case folding: the patterns are folded when compiled (each character replaced by its Unicode
//! lower case, exactly as the plain matcher in `glob.rs` does), and every automaton matches an
//! ASCII letter of the pattern in either case. A text that is pure ASCII is searched as it is,
//! without a copy: its Unicode lower case is its ASCII lower case, and as no character lower-cases
//! to an ASCII upper case letter, matching ASCII letters in either case against folded patterns is
//! the same as comparing folded texts. Any other text is folded once (one allocation) and the
//! folded text searched.
//!
//! The automata's own Unicode case-insensitivity was deliberately not used: it applies Unicode
//! *simple case folding*, which puts `σ`, `ς` and `Σ` in one class and leaves `İ` unfolded,
//! whereas the filter semantics (and the plain matcher) lower-case character by character:
//! `Σ` and `σ` are equal, the final sigma `ς` is its own letter, and `İ` becomes `i̇` (two
//! characters, so `?` does not match it alone). Lower-casing both sides keeps the two matchers
//! identical, which the property test checks.

use std::hash::{Hash, Hasher};

use aho_corasick::AhoCorasick;
use hashbrown::{Equivalent, HashMap};
use regex_automata::dfa::{self, Automaton, dense};
use regex_automata::nfa::thompson;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind, meta};

use crate::glob::{Glob, Token};

/// The compiled values of one list. `find` takes the text as it is when it is ASCII, else folded
/// with [`crate::glob::fold`].
#[derive(Clone, Debug, Default)]
pub(crate) struct CompiledList {
    /// A value made of stars only.
    match_all: Option<usize>,
    exact: Option<ExactValues>,
    prefixes: Option<LiteralAutomaton>,
    suffixes: Option<Suffixes>,
    substrings: Option<LiteralAutomaton>,
    globs: Option<Globs>,
    /// Values an automaton could not be built for (its size limits): matched one by one.
    fallback: Vec<(Glob, usize)>,
}

/// Which automaton a value goes into.
enum Shape {
    All,
    Exact(String),
    Prefix(String),
    Suffix(String),
    Substring(String),
    General,
}

fn shape(tokens: &[Token]) -> Shape {
    let literal = |tokens: &[Token]| -> Option<String> {
        tokens
            .iter()
            .map(|token| match token {
                Token::Literal(c) => Some(*c),
                Token::AnyOne | Token::AnyRun => None,
            })
            .collect()
    };
    // `Glob::new` has already collapsed `**` into `*`.
    match tokens {
        [Token::AnyRun] => Shape::All,
        [Token::AnyRun, middle @ .., Token::AnyRun] => {
            literal(middle).map_or(Shape::General, Shape::Substring)
        }
        [Token::AnyRun, rest @ ..] => literal(rest).map_or(Shape::General, Shape::Suffix),
        [rest @ .., Token::AnyRun] => literal(rest).map_or(Shape::General, Shape::Prefix),
        all => literal(all).map_or(Shape::General, Shape::Exact),
    }
}

impl CompiledList {
    pub(crate) fn new<'p>(patterns: impl IntoIterator<Item = &'p str>) -> CompiledList {
        let mut list = CompiledList::default();
        let mut exact = ExactValues::default();
        let (mut prefixes, mut suffixes, mut substrings) = (Vec::new(), Vec::new(), Vec::new());
        let mut globs: Vec<(Glob, usize)> = Vec::new();
        for (index, pattern) in patterns.into_iter().enumerate() {
            let glob = Glob::new(pattern);
            match shape(glob.tokens()) {
                Shape::All => {
                    list.match_all.get_or_insert(index);
                }
                Shape::Exact(text) => exact.insert(text, index),
                Shape::Prefix(text) => prefixes.push((text, index)),
                Shape::Suffix(text) => suffixes.push((text, index)),
                Shape::Substring(text) => substrings.push((text, index)),
                Shape::General => globs.push((glob, index)),
            }
        }
        if !exact.values.is_empty() {
            list.exact = Some(exact);
        }
        let anchored = aho_corasick::StartKind::Anchored;
        let unanchored = aho_corasick::StartKind::Unanchored;
        // Prefixes are walked only as far as the text agrees with one: a compact trie (the
        // contiguous NFA) stays in cache where a DFA of thousands of states would not.
        let trie = Some(aho_corasick::AhoCorasickKind::ContiguousNFA);
        list.prefixes = list.literal_automaton(prefixes, anchored, trie, |text| format!("{text}*"));
        // Substrings scan the whole text: the crate picks a DFA for small sets.
        list.substrings = list.literal_automaton(substrings, unanchored, None, |text| format!("*{text}*"));
        list.suffixes = list.suffixes(suffixes);
        list.globs = list.globs(globs);
        list
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.match_all.is_none()
            && self.exact.is_none()
            && self.prefixes.is_none()
            && self.suffixes.is_none()
            && self.substrings.is_none()
            && self.globs.is_none()
            && self.fallback.is_empty()
    }

    /// The index of a value that matches the whole `text` (not necessarily the first such value
    /// in config order: `explain` asks the plain matcher for that). `text` is either pure ASCII
    /// or already folded; for ASCII text this allocates nothing.
    pub(crate) fn find(&self, text: &str) -> Option<usize> {
        if let Some(index) = self.match_all {
            return Some(index);
        }
        // Cheapest first: the searches that stop early before the ones that read the whole text.
        self.exact
            .as_ref()
            .and_then(|exact| exact.find(text))
            .or_else(|| self.suffixes.as_ref().and_then(|suffixes| suffixes.find(text)))
            .or_else(|| self.prefixes.as_ref().and_then(|prefixes| prefixes.find_anchored(text)))
            .or_else(|| self.globs.as_ref().and_then(|globs| globs.find(text)))
            .or_else(|| self.substrings.as_ref().and_then(|substrings| substrings.find_anywhere(text)))
            .or_else(|| self.find_in_fallback(text))
    }

    fn literal_automaton(
        &mut self,
        literals: Vec<(String, usize)>,
        start_kind: aho_corasick::StartKind,
        kind: Option<aho_corasick::AhoCorasickKind>,
        as_pattern: impl Fn(&str) -> String,
    ) -> Option<LiteralAutomaton> {
        if literals.is_empty() {
            return None;
        }
        let built = AhoCorasick::builder()
            .kind(kind)
            .ascii_case_insensitive(true)
            .start_kind(start_kind)
            .build(literals.iter().map(|(text, _)| text));
        match built {
            Ok(automaton) => Some(LiteralAutomaton {
                automaton,
                values: literals.into_iter().map(|(_, index)| index).collect(),
            }),
            Err(_) => {
                self.fallback
                    .extend(literals.iter().map(|(text, index)| (Glob::new(&as_pattern(text)), *index)));
                None
            }
        }
    }

    fn suffixes(&mut self, literals: Vec<(String, usize)>) -> Option<Suffixes> {
        if literals.is_empty() {
            return None;
        }
        let patterns: Vec<String> = literals.iter().map(|(text, _)| literal_regex(text)).collect();
        let built = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .start_kind(dfa::StartKind::Anchored)
                    .match_kind(MatchKind::All)
                    .determinize_size_limit(Some(DFA_SIZE_LIMIT))
                    .dfa_size_limit(Some(DFA_SIZE_LIMIT)),
            )
            .thompson(thompson::Config::new().reverse(true))
            .build_many(&patterns);
        match built {
            Ok(dfa) => Some(Suffixes { dfa, literals }),
            Err(_) => {
                self.fallback
                    .extend(literals.iter().map(|(text, index)| (Glob::new(&format!("*{text}")), *index)));
                None
            }
        }
    }

    fn globs(&mut self, globs: Vec<(Glob, usize)>) -> Option<Globs> {
        if globs.is_empty() {
            return None;
        }
        let patterns: Vec<String> = globs.iter().map(|(glob, _)| glob_regex(glob.tokens())).collect();
        let values = globs.iter().map(|(_, index)| *index).collect();
        let syntax = syntax::Config::new().dot_matches_new_line(true);
        // A fully built DFA is the fastest to search, but `*` inside several values can make
        // it grow exponentially: past the size limit, a lazy DFA (the meta regex) does instead.
        let dfa = dense::Builder::new()
            .syntax(syntax)
            .configure(
                dense::Config::new()
                    .start_kind(dfa::StartKind::Anchored)
                    .determinize_size_limit(Some(DFA_SIZE_LIMIT))
                    .dfa_size_limit(Some(DFA_SIZE_LIMIT)),
            )
            .build_many(&patterns);
        if let Ok(dfa) = dfa {
            return Some(Globs { matcher: GlobMatcher::Dfa(Box::new(dfa)), values, globs });
        }
        match meta::Regex::builder().syntax(syntax).build_many(&patterns) {
            Ok(regex) => Some(Globs { matcher: GlobMatcher::Regex(regex), values, globs }),
            Err(_) => {
                self.fallback.extend(globs);
                None
            }
        }
    }

    fn find_in_fallback(&self, text: &str) -> Option<usize> {
        if self.fallback.is_empty() {
            return None;
        }
        find_one_by_one(&self.fallback, text)
    }
}

/// The plain matcher over `globs`; `text` is ASCII or folded.
fn find_one_by_one(globs: &[(Glob, usize)], text: &str) -> Option<usize> {
    if text.is_ascii() {
        globs.iter().find(|(glob, _)| glob.matches(text.as_bytes())).map(|(_, index)| *index)
    } else {
        let chars: Vec<char> = text.chars().collect();
        globs.iter().find(|(glob, _)| glob.matches(&chars)).map(|(_, index)| *index)
    }
}

/// Values without wildcards, keyed by their folded text; looked up without folding ASCII text.
#[derive(Clone, Debug, Default)]
struct ExactValues {
    values: HashMap<FoldedKey, usize>,
    /// `lengths[n]`: some value is `n` bytes long. Most texts have no value of their length,
    /// which spares hashing them.
    lengths: Vec<bool>,
}

impl ExactValues {
    fn insert(&mut self, folded: String, index: usize) {
        if self.lengths.len() <= folded.len() {
            self.lengths.resize(folded.len() + 1, false);
        }
        self.lengths[folded.len()] = true;
        // The first of duplicate values is the one that decides.
        self.values.entry(FoldedKey(folded.into_boxed_str())).or_insert(index);
    }

    fn find(&self, text: &str) -> Option<usize> {
        if !self.lengths.get(text.len()).copied().unwrap_or(false) {
            return None;
        }
        self.values.get(&CaselessText(text)).copied()
    }
}

/// A folded value: contains no ASCII upper case letter.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FoldedKey(Box<str>);

/// A text to look up, compared with ASCII letters in either case.
struct CaselessText<'t>(&'t str);

impl Hash for FoldedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_ascii_lowercase(self.0.as_bytes(), state);
    }
}

impl Hash for CaselessText<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_ascii_lowercase(self.0.as_bytes(), state);
    }
}

impl Equivalent<FoldedKey> for CaselessText<'_> {
    fn equivalent(&self, key: &FoldedKey) -> bool {
        self.0.eq_ignore_ascii_case(&key.0)
    }
}

/// Hashes the ASCII lower case of `bytes` through a small stack buffer, so that a text and its
/// folded key hash alike without folding the text into a new string.
fn hash_ascii_lowercase<H: Hasher>(bytes: &[u8], state: &mut H) {
    let mut buffer = [0u8; 64];
    for chunk in bytes.chunks(buffer.len()) {
        let lowered = &mut buffer[..chunk.len()];
        lowered.copy_from_slice(chunk);
        lowered.make_ascii_lowercase();
        state.write(lowered);
    }
    state.write_usize(bytes.len());
}

/// An Aho-Corasick automaton over folded literals, matching ASCII letters in either case.
#[derive(Clone, Debug)]
struct LiteralAutomaton {
    automaton: AhoCorasick,
    /// Value index per automaton pattern.
    values: Vec<usize>,
}

impl LiteralAutomaton {
    /// A literal the text starts with. Only for an automaton built with `StartKind::Anchored`.
    fn find_anchored(&self, text: &str) -> Option<usize> {
        let input = aho_corasick::Input::new(text).anchored(aho_corasick::Anchored::Yes);
        // `find` panics only for a search the automaton was not built for: this one was.
        self.automaton.find(input).map(|found| self.values[found.pattern().as_usize()])
    }

    /// A literal the text contains.
    fn find_anywhere(&self, text: &str) -> Option<usize> {
        self.automaton.find(text).map(|found| self.values[found.pattern().as_usize()])
    }
}

/// `*suffix` values: a DFA of the reversed literals, run backwards from the end of the text.
#[derive(Clone, Debug)]
struct Suffixes {
    dfa: dense::DFA<Vec<u32>>,
    /// The folded literals with their value indexes, in DFA pattern order.
    literals: Vec<(String, usize)>,
}

impl Suffixes {
    fn find(&self, text: &str) -> Option<usize> {
        let input = Input::new(text).anchored(Anchored::Yes);
        match self.dfa.try_search_rev(&input) {
            Ok(found) => found.map(|half| self.literals[half.pattern().as_usize()].1),
            // A fully built DFA without quit bytes never fails a search; should it ever, the
            // answer is still computed, just slower.
            Err(_) => self
                .literals
                .iter()
                .find(|(literal, _)| ends_with_ignoring_ascii_case(text, literal))
                .map(|l| l.1),
        }
    }
}

fn ends_with_ignoring_ascii_case(text: &str, suffix: &str) -> bool {
    text.len() >= suffix.len()
        && text.as_bytes()[text.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// Bytes a fully built DFA may take (while being built and when built). Dense DFAs: sparse
/// ones are smaller but measured several times slower to search.
const DFA_SIZE_LIMIT: usize = 1 << 20;

/// General globs as one multi-pattern automaton.
#[derive(Clone, Debug)]
struct Globs {
    matcher: GlobMatcher,
    /// Value index per automaton pattern.
    values: Vec<usize>,
    /// The globs themselves, should a search fail.
    globs: Vec<(Glob, usize)>,
}

#[derive(Clone, Debug)]
enum GlobMatcher {
    Dfa(Box<dense::DFA<Vec<u32>>>),
    Regex(meta::Regex),
}

impl Globs {
    fn find(&self, text: &str) -> Option<usize> {
        // Every pattern is anchored at both ends, so the first match state seen is a whole match.
        let input = Input::new(text).anchored(Anchored::Yes).earliest(true);
        let found = match &self.matcher {
            GlobMatcher::Dfa(dfa) => match dfa.try_search_fwd(&input) {
                Ok(found) => found,
                // A DFA without quit bytes never fails a search; should it ever, the answer is
                // still computed, just slower.
                Err(_) => return find_one_by_one(&self.globs, text),
            },
            GlobMatcher::Regex(regex) => regex.search_half(&input),
        };
        found.map(|half| self.values[half.pattern().as_usize()])
    }
}

/// A regex matching the folded `literal` with ASCII letters in either case.
fn literal_regex(literal: &str) -> String {
    let mut regex = String::with_capacity(literal.len() * 2);
    literal.chars().for_each(|c| push_literal(&mut regex, c));
    regex
}

/// A regex matching the whole text for a tokenized glob.
fn glob_regex(tokens: &[Token]) -> String {
    let mut regex = String::from(r"\A");
    for token in tokens {
        match token {
            Token::Literal(c) => push_literal(&mut regex, *c),
            Token::AnyOne => regex.push('.'),
            Token::AnyRun => regex.push_str(".*"),
        }
    }
    regex.push_str(r"\z");
    regex
}

/// Appends folded character `c`: an ASCII letter as a class of both cases, anything else escaped
/// (`\` included: it is a literal character in filter values).
fn push_literal(regex: &mut String, c: char) {
    if c.is_ascii_lowercase() {
        regex.push('[');
        regex.push(c);
        regex.push(c.to_ascii_uppercase());
        regex.push(']');
    } else {
        regex_syntax::escape_into(c.encode_utf8(&mut [0; 4]), regex);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glob::{FoldedText, PatternList, fold};

    /// What the filter stage hands the compiled list: ASCII text as is, anything else folded.
    fn find(list: &CompiledList, text: &str) -> Option<usize> {
        if text.is_ascii() { list.find(text) } else { list.find(&fold(text)) }
    }

    fn matches(pattern: &str, text: &str) -> bool {
        find(&CompiledList::new([pattern]), text).is_some()
    }

    #[test]
    fn values_are_sorted_by_shape() {
        let list = CompiledList::new(["exact", "pre*", "*suf", "*sub*", "a?c", "a*c", "**"]);
        assert!(list.exact.is_some() && list.prefixes.is_some() && list.suffixes.is_some());
        assert!(list.substrings.is_some() && list.globs.is_some() && list.match_all == Some(6));
        assert!(list.fallback.is_empty());
        assert_eq!(find(&list, "EXACT"), Some(6), "a star-only value matches before anything else");

        let list = CompiledList::new(["exact", "pre*", "*suf", "*sub*", "a?c", "a*c"]);
        assert_eq!(find(&list, "EXACT"), Some(0));
        assert_eq!(find(&list, "Prefix"), Some(1));
        assert_eq!(find(&list, "the SUF"), Some(2));
        assert_eq!(find(&list, "a sub b"), Some(3));
        assert_eq!(find(&list, "abc"), Some(4));
        assert_eq!(find(&list, "a--c"), Some(5));
        assert_eq!(find(&list, "exactly"), None);
        assert_eq!(find(&list, "xpre"), None);
        assert_eq!(find(&list, "sufx"), None);
        assert_eq!(find(&list, "su b"), None);
        assert_eq!(find(&list, "a--cd"), None);
        assert!(CompiledList::new([]).is_empty());
        assert_eq!(find(&CompiledList::new([]), ""), None);
    }

    #[test]
    fn backslash_and_regex_syntax_are_literal() {
        assert!(matches(r"C:\Windows\*", r"c:\windows\system32\cmd.exe"));
        assert!(!matches(r"C:\Windows\*", "C:/Windows/x"));
        assert!(matches(r"*\d", r"x\D"));
        assert!(!matches(r"*\d", "x5"));
        assert!(matches(r"a\?c", r"a\bc"));
        assert!(matches("(a|b)?[c]{1}.+$", "(a|b)x[C]{1}.+$"));
        assert!(!matches("(a|b)?[c]{1}.+$", "ax[c]"));
        assert!(matches("*.exe", "A.EXE"));
        assert!(!matches("*.exe", "AxEXE"));
    }

    #[test]
    fn wildcards_match_newlines() {
        assert!(matches("a*b", "a\nb"));
        assert!(matches("a?b", "a\nb"));
        assert!(matches("*x*", "\nx\n"));
    }

    #[test]
    fn case_folding_is_per_character_lower_case() {
        // Σ and σ are one letter, the final sigma ς another (unlike Unicode simple case folding).
        assert!(matches("ΑΣ", "ασ"));
        assert!(matches("*σ", "ΑΣ"));
        assert!(!matches("*σ", "ας"));
        assert!(!matches("ας", "ΑΣ"));
        assert!(matches("a?c*", "aΣcd"));
        // ß has no single-character upper case; ẞ lower-cases to it.
        assert!(matches("straße", "STRAẞE"));
        assert!(!matches("strasse", "straße"));
        // İ lower-cases to i followed by a combining dot: two characters.
        assert!(matches("İ*", "i\u{307}stanbul"));
        assert!(matches("i*", "İSTANBUL"));
        assert!(!matches("?stanbul", "İstanbul"));
        assert!(matches("??stanbul", "İstanbul"));
        assert!(!matches("istanbul", "İstanbul"));
        // The Kelvin sign lower-cases to an ASCII k.
        assert!(matches("\u{212A}elvin", "KELVIN"));
        assert!(matches("kelvin", "\u{212A}elvin"));
    }

    #[test]
    fn no_character_lower_cases_to_an_ascii_upper_case_letter() {
        // The ASCII fast path relies on it: a folded text never holds an ASCII upper case
        // letter, so matching ASCII letters in either case changes nothing for folded text.
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            assert!(!c.to_lowercase().any(|l| l.is_ascii_uppercase()), "{c:?}");
        }
    }

    #[test]
    fn lists_too_large_for_the_automata_still_match() {
        // Each `?` is a Unicode `.`, dozens of NFA states: far beyond the regex size limit.
        let huge = "?".repeat(200_000);
        let list = CompiledList::new(["a?b", huge.as_str()]);
        assert!(list.globs.is_none() && list.fallback.len() == 2);
        assert_eq!(find(&list, "AxB"), Some(0));
        assert_eq!(find(&list, &"é".repeat(200_000)), Some(1));
        assert_eq!(find(&list, "ab"), None);
    }

    #[test]
    fn exact_lookup_hashes_long_texts_alike() {
        let long = format!("{}Z", "y".repeat(150));
        let list = CompiledList::new([long.as_str(), "short"]);
        assert_eq!(find(&list, &long.to_ascii_uppercase()), Some(0));
        assert_eq!(find(&list, &long.to_ascii_lowercase()), Some(0));
        assert_eq!(find(&list, &long[1..]), None);
        assert_eq!(find(&list, "SHORT"), Some(1));
    }

    /// The first value of `patterns` that matches, by the plain matcher.
    fn reference(patterns: &[String], text: &str) -> Option<usize> {
        PatternList::new(patterns.iter().map(String::as_str)).first_match(&FoldedText::new(text))
    }

    /// Patterns of every shape built from characters that matter: wildcards, `\`, regex syntax,
    /// ASCII letters in both cases and letters whose lower case is special.
    fn pattern() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let body = "[aAbB\\\\.(|*?äÄßẞσςΣİi\u{307}K\n]{0,6}";
        prop_oneof![
            body.prop_map(|b| b.replace(['*', '?'], "")),
            body.prop_map(|b| format!("{}*", b.replace('*', ""))),
            body.prop_map(|b| format!("*{}", b.replace('*', ""))),
            body.prop_map(|b| format!("*{}*", b.replace('*', ""))),
            proptest::string::string_regex(body).unwrap(),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]

        #[test]
        fn agrees_with_the_plain_matcher(
            patterns in proptest::collection::vec(pattern(), 0..8),
            text in "[aAbBxX\\\\.(|*?äÄßẞσςΣİi\u{307}K\n]{0,10}",
        ) {
            let list = CompiledList::new(patterns.iter().map(String::as_str));
            let found = find(&list, &text);
            let expected = reference(&patterns, &text);
            proptest::prop_assert_eq!(found.is_some(), expected.is_some(), "{:?} on {:?}", patterns, text);
            if let Some(index) = found {
                // The index names a value that really matches.
                proptest::prop_assert!(reference(&patterns[index..=index], &text).is_some());
            }
        }

        #[test]
        fn agrees_with_the_plain_matcher_on_texts_made_from_the_patterns(
            patterns in proptest::collection::vec(pattern(), 1..8),
            pick in 0usize..8,
            fill in "[aBä\\\\Σ]{0,3}",
            upper in proptest::bool::ANY,
        ) {
            // Random texts rarely match long patterns: derive texts that nearly do.
            let source = &patterns[pick % patterns.len()];
            let text = source.replace('*', &fill).replace('?', "x");
            let text = if upper { text.to_uppercase() } else { text };
            let list = CompiledList::new(patterns.iter().map(String::as_str));
            proptest::prop_assert_eq!(
                find(&list, &text).is_some(),
                reference(&patterns, &text).is_some(),
                "{:?} on {:?}", patterns, text
            );
        }
    }
}
