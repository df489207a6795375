//! One filter list (a column's include or exclude values) compiled into automata, so that a
//! text is tested against all the values at once instead of one value after the other.
//!
//! The text is searched lower-cased (see "Case" below). Each value is sorted by its shape once,
//! at compile time:
//! - no wildcard: a hash map keyed by the folded text, behind a table of the lengths present;
//! - `prefix*`: a path-compressed trie (`Trie`, hand-written: see there why) walked from the
//!   start of the text as far as the text agrees with some value;
//! - `*suffix`: a trie of the reversed literals, walked backwards from the end of the text;
//! - `*substring*`: one unanchored Aho-Corasick automaton (with its SIMD prefilters);
//! - any other value with a literal before its first wildcard or after its last one
//!   (`C:\Users\*\OneDrive.exe`, `80??`): that literal is put into the prefix or the suffix trie
//!   (the longer of the two) as a *gate*; only when the gate is hit is the value itself checked,
//!   by the plain matcher of `glob.rs`. One multi-pattern DFA of regexes would be the textbook
//!   answer, but a `*` inside many values makes it exceed any sane size, and the lazy DFA that
//!   then replaces it measured slower than the gates;
//! - values that start and end with a wildcard but are not `*substring*` (`*a?b*`): one
//!   multi-pattern DFA of `\A...\z` regexes (`*` → `.*`, `?` → `.`, newlines included), the meta
//!   regex (a lazy DFA) when the full DFA would exceed its size limit;
//! - only stars: matches every text, no automaton needed.
//!
//! Case: the patterns are folded when compiled (each character replaced by its Unicode lower
//! case, exactly as the plain matcher in `glob.rs` does) and the text is folded the same way
//! before the search (for ASCII text, an ASCII lower case into a stack buffer, without
//! allocating; see `lib.rs`). So every automaton is case-sensitive, which keeps them half the
//! size and lets Aho-Corasick use its fast prefilters. The automata's own Unicode
//! case-insensitivity was deliberately not used: it applies Unicode *simple case folding*, which
//! puts `σ`, `ς` and `Σ` in one class and leaves `İ` unfolded, whereas the filter semantics (and
//! the plain matcher) lower-case character by character: `Σ` and `σ` are equal, the final sigma
//! `ς` is its own letter, and `İ` becomes `i̇` (two characters, so `?` does not match it alone).
//! Lower-casing both sides keeps the two matchers identical, which the property test checks.

use aho_corasick::AhoCorasick;
use hashbrown::HashMap;
use regex_automata::dfa::{self, Automaton as _, dense};
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, meta};

use crate::glob::{Folded, Glob, Token};

/// The compiled values of one list. `find` takes the text folded (see the module doc).
#[derive(Clone, Debug, Default)]
pub(crate) struct CompiledList {
    /// A value made of stars only.
    match_all: Option<usize>,
    exact: Option<ExactValues>,
    /// `prefix*` values and the gates of general values that start with a literal.
    heads: Option<Trie>,
    /// `*suffix` values and the gates of general values that end with a literal (reversed).
    tails: Option<Trie>,
    substrings: Option<Substrings>,
    /// General values behind a gate in `heads` or `tails`, checked when the gate is hit.
    gated: Vec<Gated>,
    /// General values without a literal at either end.
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
    /// A general value gated by the literal before its first wildcard.
    GatedByHead(String),
    /// A general value gated by the literal after its last wildcard.
    GatedByTail(String),
    General,
}

/// The text of `tokens` if they are all literals.
fn literal(tokens: &[Token]) -> Option<String> {
    tokens
        .iter()
        .map(|token| match token {
            Token::Literal(c) => Some(*c),
            Token::AnyOne | Token::AnyRun => None,
        })
        .collect()
}

/// The literal before the first wildcard and the one after the last (empty if none).
fn literal_ends(tokens: &[Token]) -> (String, String) {
    let is_literal = |token: &&Token| matches!(token, Token::Literal(_));
    let head = tokens.iter().take_while(is_literal).count();
    let tail = tokens.iter().rev().take_while(is_literal).count();
    let text = |run: &[Token]| literal(run).unwrap_or_default();
    (text(&tokens[..head]), text(&tokens[tokens.len() - tail..]))
}

fn shape(tokens: &[Token]) -> Shape {
    // `Glob::new` has already collapsed `**` into `*`.
    let simple = match tokens {
        [Token::AnyRun] => Some(Shape::All),
        [Token::AnyRun, middle @ .., Token::AnyRun] => literal(middle).map(Shape::Substring),
        [Token::AnyRun, rest @ ..] => literal(rest).map(Shape::Suffix),
        [rest @ .., Token::AnyRun] => literal(rest).map(Shape::Prefix),
        all => literal(all).map(Shape::Exact),
    };
    if let Some(simple) = simple {
        return simple;
    }
    let (head, tail) = literal_ends(tokens);
    // The longer literal is usually the rarer one (paths share their starts and extensions).
    match (head.is_empty(), tail.is_empty()) {
        (true, true) => Shape::General,
        _ if head.len() >= tail.len() => Shape::GatedByHead(head),
        _ => Shape::GatedByTail(tail),
    }
}

impl CompiledList {
    pub(crate) fn new<'p>(patterns: impl IntoIterator<Item = &'p str>) -> CompiledList {
        let mut list = CompiledList::default();
        let mut exact = ExactValues::default();
        let (mut heads, mut tails, mut substrings) = (Vec::new(), Vec::new(), Vec::new());
        let mut globs: Vec<(Glob, usize)> = Vec::new();
        for (index, pattern) in patterns.into_iter().enumerate() {
            let glob = Glob::new(pattern);
            match shape(glob.tokens()) {
                Shape::All => {
                    list.match_all.get_or_insert(index);
                }
                Shape::Exact(text) => exact.insert(text, index),
                Shape::Prefix(text) => heads.push((text.into_bytes(), Hit::Value(index))),
                Shape::Suffix(text) => {
                    tails.push((text.into_bytes().into_iter().rev().collect(), Hit::Value(index)))
                }
                Shape::Substring(text) => substrings.push((text, index)),
                Shape::GatedByHead(text) => {
                    heads.push((text.into_bytes(), Hit::Check(list.gated.len())));
                    list.gated.push(Gated::new(glob, index));
                }
                Shape::GatedByTail(text) => {
                    tails.push((text.into_bytes().into_iter().rev().collect(), Hit::Check(list.gated.len())));
                    list.gated.push(Gated::new(glob, index));
                }
                Shape::General => globs.push((glob, index)),
            }
        }
        if !exact.values.is_empty() {
            list.exact = Some(exact);
        }
        list.heads = Some(Trie::new(heads, false)).filter(|trie| !trie.is_empty());
        list.tails = Some(Trie::new(tails, true)).filter(|trie| !trie.is_empty());
        list.substrings = list.substrings(substrings);
        list.globs = list.globs(globs);
        list
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.match_all.is_none()
            && self.exact.is_none()
            && self.heads.is_none()
            && self.tails.is_none()
            && self.substrings.is_none()
            && self.globs.is_none()
            && self.fallback.is_empty()
    }

    /// The index of a value that matches the whole `text` (not necessarily the first such value
    /// in config order: `explain` asks the plain matcher for that). Allocates nothing for ASCII
    /// text.
    pub(crate) fn find(&self, text: Folded<'_>) -> Option<usize> {
        if let Some(index) = self.match_all {
            return Some(index);
        }
        let bytes = text.bytes();
        let check = |gated: usize| self.gated[gated].check(text);
        // Cheapest first: the searches that stop early before the ones that read the whole text.
        self.exact
            .as_ref()
            .and_then(|exact| exact.find(bytes))
            .or_else(|| self.tails.as_ref().and_then(|tails| tails.find(bytes, check)))
            .or_else(|| self.heads.as_ref().and_then(|heads| heads.find(bytes, check)))
            .or_else(|| self.substrings.as_ref().and_then(|substrings| substrings.find(bytes)))
            .or_else(|| self.globs.as_ref().and_then(|globs| globs.find(text)))
            .or_else(|| find_one_by_one(&self.fallback, text))
    }

    fn substrings(&mut self, literals: Vec<(String, usize)>) -> Option<Substrings> {
        if literals.is_empty() {
            return None;
        }
        let patterns = literals.iter().map(|(text, _)| text);
        // Teddy (SIMD) takes up to 128 literals and measured faster than the automaton with its
        // prefilter on this data; the automaton for larger sets.
        let searcher = match aho_corasick::packed::Config::new().builder().extend(patterns.clone()).build() {
            Some(teddy) => SubstringSearcher::Teddy(teddy),
            None => match AhoCorasick::builder().build(patterns) {
                Ok(automaton) => SubstringSearcher::Automaton(automaton),
                Err(_) => {
                    self.fallback.extend(
                        literals.iter().map(|(text, index)| (Glob::new(&format!("*{text}*")), *index)),
                    );
                    return None;
                }
            },
        };
        Some(Substrings { searcher, values: literals.into_iter().map(|(_, index)| index).collect() })
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
}

/// A general value behind a gate.
#[derive(Clone, Debug)]
struct Gated {
    glob: Glob,
    index: usize,
    /// The literal before the first wildcard and the one after the last, folded.
    head: Box<[u8]>,
    tail: Box<[u8]>,
    /// No shorter text (in bytes) can match.
    min_len: usize,
}

impl Gated {
    fn new(glob: Glob, index: usize) -> Gated {
        let (head, tail) = literal_ends(glob.tokens());
        let (head, tail) = (head.into_bytes().into_boxed_slice(), tail.into_bytes().into_boxed_slice());
        let min_len = glob
            .tokens()
            .iter()
            .map(|token| match token {
                Token::Literal(c) => c.len_utf8(),
                Token::AnyOne => 1,
                Token::AnyRun => 0,
            })
            .sum();
        Gated { glob, index, head, tail, min_len }
    }

    /// The value's index if it matches the folded `text`; the cheap tests of its length and
    /// both ends first (the gate has checked only one end).
    fn check(&self, text: Folded<'_>) -> Option<usize> {
        let bytes = text.bytes();
        let plausible = bytes.len() >= self.min_len
            && bytes.get(..self.head.len()).is_some_and(|head| same_bytes(head, &self.head))
            && bytes
                .len()
                .checked_sub(self.tail.len())
                .is_some_and(|at| same_bytes(&bytes[at..], &self.tail));
        (plausible && text.matches(&self.glob)).then_some(self.index)
    }
}

/// The plain matcher over `globs`.
fn find_one_by_one(globs: &[(Glob, usize)], text: Folded<'_>) -> Option<usize> {
    match text {
        Folded::Ascii(bytes) => globs.iter().find(|(glob, _)| glob.matches(bytes)).map(|(_, index)| *index),
        Folded::Unicode(text) if !globs.is_empty() => {
            let chars: Vec<char> = text.chars().collect();
            globs.iter().find(|(glob, _)| glob.matches(&chars)).map(|(_, index)| *index)
        }
        Folded::Unicode(_) => None,
    }
}

/// Values without wildcards, keyed by their folded text.
#[derive(Clone, Debug, Default)]
struct ExactValues {
    /// hashbrown's default hasher (foldhash): the keys are the config's values, no DoS concern.
    values: HashMap<Box<[u8]>, usize>,
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
        self.values.entry(folded.into_bytes().into_boxed_slice()).or_insert(index);
    }

    fn find(&self, text: &[u8]) -> Option<usize> {
        if !self.lengths.get(text.len()).copied().unwrap_or(false) {
            return None;
        }
        self.values.get(text).copied()
    }
}

/// What a literal of a trie stands for.
#[derive(Clone, Copy, Debug)]
enum Hit {
    /// The value (`prefix*` or `*suffix`) with this index matches.
    Value(usize),
    /// The gate of `CompiledList::gated[i]`: that value must be checked.
    Check(usize),
}

impl Hit {
    /// As stored in a trie node: the index shifted left, the low bit set for a gate.
    fn encode(self) -> usize {
        match self {
            Hit::Value(index) => index << 1,
            Hit::Check(gated) => gated << 1 | 1,
        }
    }

    fn decode(word: u32) -> Hit {
        let index = (word >> 1) as usize;
        if word & 1 == 0 { Hit::Value(index) } else { Hit::Check(index) }
    }
}

/// Literals walked anchored from one end of the text: every literal the text starts with (or,
/// for a trie of reversed suffixes walked from the end, ends with) is found, the walk stopping
/// as soon as no literal continues the way the text does.
///
/// Hand-written, a path-compressed trie (radix tree): Aho-Corasick's automata were measured
/// first (walked state by state through its `Automaton` trait, since a gate hit is not a match
/// and the walk must go on to the next literal). Their walk costs one dependent memory load per
/// byte, and filter values share long runs (`c:\windows\system32\...`): a radix tree compares
/// such a run with one slice comparison and was measured several times faster.
#[derive(Clone, Debug, Default)]
struct Trie {
    /// The nodes, depth first, each encoded as
    /// `[label length, child count, hit count: u32 LE][hit of each literal that ends where the
    /// label ends: u32 LE, see `Hit::encode`][label][first byte of each child's label,
    /// zero-padded to a multiple of 8][offset of each child: u32 LE]`.
    /// A walk reads a node's parts from adjacent memory, and a first child sits right after its
    /// parent: the separate arrays this replaced cost a cache miss per part.
    nodes: Vec<u8>,
    /// Walked from the end of the text.
    reversed: bool,
}

const NODE_HEADER: usize = 12;

/// The little-endian `u32` at `at` of `bytes`.
fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn push_u32(bytes: &mut Vec<u8>, value: usize) {
    // A config with more than 4 GiB of filter values does not load.
    bytes.extend_from_slice(&(value as u32).to_le_bytes());
}

impl Trie {
    /// `literals` in walk order (suffixes reversed when `reversed`).
    fn new(mut literals: Vec<(Vec<u8>, Hit)>, reversed: bool) -> Trie {
        // Stable: of equal literals, the first in config order is reported first.
        literals.sort_by(|a, b| a.0.cmp(&b.0));
        let mut trie = Trie { reversed, ..Trie::default() };
        if !literals.is_empty() {
            trie.build(&literals, 0);
        }
        trie
    }

    /// Appends the node for the sorted `literals`, which agree on their first `depth` bytes,
    /// and its subtree; returns the node's offset.
    fn build(&mut self, literals: &[(Vec<u8>, Hit)], depth: usize) -> usize {
        let (first, last) = (&literals[0].0, &literals[literals.len() - 1].0);
        // Sorted, so what the first and last literal share, all share; the first is the
        // shortest of those that end inside it.
        let shared = first[depth..].iter().zip(&last[depth..]).take_while(|(a, b)| a == b).count();
        let end = depth + shared;
        let mut label = first[depth..end].to_vec();
        if self.reversed {
            label.reverse();
        }
        let ending = literals.iter().take_while(|(literal, _)| literal.len() == end).count();
        let rest = &literals[ending..];
        let mut groups: Vec<&[(Vec<u8>, Hit)]> = Vec::new();
        let mut from = 0;
        for to in 1..=rest.len() {
            if to == rest.len() || rest[to].0[end] != rest[from].0[end] {
                groups.push(&rest[from..to]);
                from = to;
            }
        }
        let node = self.nodes.len();
        push_u32(&mut self.nodes, label.len());
        push_u32(&mut self.nodes, groups.len());
        push_u32(&mut self.nodes, ending);
        for (_, hit) in &literals[..ending] {
            push_u32(&mut self.nodes, hit.encode());
        }
        self.nodes.extend_from_slice(&label);
        self.nodes.extend(groups.iter().map(|group| group[0].0[end]));
        self.nodes.resize(self.nodes.len() + padding(groups.len()), 0);
        let offsets = self.nodes.len();
        self.nodes.resize(offsets + 4 * groups.len(), 0);
        for (position, group) in groups.into_iter().enumerate() {
            let child = self.build(group, end);
            let slot = offsets + 4 * position;
            self.nodes[slot..slot + 4].copy_from_slice(&(child as u32).to_le_bytes());
        }
        node
    }

    fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Walks `text` (from the end when reversed) and returns the first value index that a
    /// literal hit yields: a `Value` directly, a `Check` through `check`.
    fn find(&self, text: &[u8], check: impl Fn(usize) -> Option<usize>) -> Option<usize> {
        let nodes = self.nodes.as_slice();
        if nodes.is_empty() {
            return None;
        }
        let mut node = 0;
        // Bytes of the text walked so far.
        let mut walked = 0;
        // The first byte (in walk order) of a child's label was compared when choosing it.
        let mut compared = 0;
        loop {
            let mut header = [0; NODE_HEADER];
            header.copy_from_slice(&nodes[node..node + NODE_HEADER]);
            let field = |at: usize| {
                u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]) as usize
            };
            let (label_len, child_count, hit_count) = (field(0), field(4), field(8));
            let rest = text.len() - walked;
            if label_len > rest {
                return None;
            }
            let hits = node + NODE_HEADER;
            let label_at = hits + 4 * hit_count;
            let label = &nodes[label_at..label_at + label_len];
            let agrees = if self.reversed {
                same_bytes(&text[rest - label_len..rest - compared], &label[..label_len - compared])
            } else {
                same_bytes(&text[walked + compared..walked + label_len], &label[compared..])
            };
            if !agrees {
                return None;
            }
            walked += label_len;
            for at in (hits..label_at).step_by(4) {
                let found = match Hit::decode(read_u32(nodes, at)) {
                    Hit::Value(index) => Some(index),
                    Hit::Check(gated) => check(gated),
                };
                if found.is_some() {
                    return found;
                }
            }
            if walked == text.len() {
                return None;
            }
            let next = if self.reversed { text[text.len() - walked - 1] } else { text[walked] };
            let child_bytes = label_at + label_len;
            let padded = child_count + padding(child_count);
            let child = position_of(&nodes[child_bytes..child_bytes + padded], child_count, next)?;
            node = read_u32(nodes, child_bytes + padded + 4 * child) as usize;
            compared = 1;
        }
    }
}

/// Zero bytes that pad `count` child bytes to a multiple of 8.
fn padding(count: usize) -> usize {
    count.next_multiple_of(8) - count
}

/// Whether `a` and `b`, of equal length, are equal. Most trie labels are a few bytes: two
/// overlapping word comparisons (without a branch per byte, nor a call to `memcmp`).
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    fn word<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
        let mut word = [0; N];
        word.copy_from_slice(&bytes[at..at + N]);
        word
    }
    let n = a.len();
    match n {
        0 => true,
        1..4 => (a[0] == b[0]) & (a[n / 2] == b[n / 2]) & (a[n - 1] == b[n - 1]),
        4..8 => (word::<4>(a, 0) == word::<4>(b, 0)) & (word::<4>(a, n - 4) == word::<4>(b, n - 4)),
        8..=16 => (word::<8>(a, 0) == word::<8>(b, 0)) & (word::<8>(a, n - 8) == word::<8>(b, n - 8)),
        _ => {
            // Longer labels (shared directory runs): words, the last one overlapping.
            let mut differ = 0;
            let mut at = 0;
            while at + 8 < n {
                differ |= u64::from_ne_bytes(word::<8>(a, at)) ^ u64::from_ne_bytes(word::<8>(b, at));
                at += 8;
            }
            differ |= u64::from_ne_bytes(word::<8>(a, n - 8)) ^ u64::from_ne_bytes(word::<8>(b, n - 8));
            differ == 0
        }
    }
}

/// The position of `byte` among the first `count` bytes of `padded` (zero-padded to a multiple
/// of 8), eight bytes at a time: one comparison for most nodes instead of a loop whose length
/// the processor mispredicts.
fn position_of(padded: &[u8], count: usize, byte: u8) -> Option<usize> {
    const LOW_SEVEN: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let pattern = u64::from_le_bytes([byte; 8]);
    for (chunk_index, chunk) in padded.chunks_exact(8).enumerate() {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let differences = u64::from_le_bytes(word) ^ pattern;
        // The high bit set exactly in the bytes of `differences` that are zero.
        let equal = !(((differences & LOW_SEVEN) + LOW_SEVEN) | differences | LOW_SEVEN);
        if equal != 0 {
            let position = chunk_index * 8 + (equal.trailing_zeros() / 8) as usize;
            // A zero `byte` also equals the padding, which follows every real child byte.
            return (position < count).then_some(position);
        }
    }
    None
}

/// `*substring*` values: an unanchored Aho-Corasick search, any hit is a match.
#[derive(Clone, Debug)]
struct Substrings {
    searcher: SubstringSearcher,
    /// Value index per searcher pattern.
    values: Vec<usize>,
}

#[derive(Clone, Debug)]
enum SubstringSearcher {
    Teddy(aho_corasick::packed::Searcher),
    Automaton(AhoCorasick),
}

impl Substrings {
    fn find(&self, text: &[u8]) -> Option<usize> {
        let found = match &self.searcher {
            SubstringSearcher::Teddy(teddy) => teddy.find(text),
            SubstringSearcher::Automaton(automaton) => automaton.find(text),
        };
        found.map(|found| self.values[found.pattern().as_usize()])
    }
}

/// Bytes a fully built glob DFA may take (while being built and when built). Dense DFAs: sparse
/// ones are smaller but measured several times slower to search.
const DFA_SIZE_LIMIT: usize = 1 << 20;

/// General values without a literal at either end, as one multi-pattern automaton.
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
    fn find(&self, text: Folded<'_>) -> Option<usize> {
        // Every pattern is anchored at both ends, so the first match state seen is a whole match.
        let input = Input::new(text.bytes()).anchored(Anchored::Yes).earliest(true);
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

/// A regex matching the whole folded text for a tokenized glob.
fn glob_regex(tokens: &[Token]) -> String {
    let mut regex = String::from(r"\A");
    for token in tokens {
        match token {
            // `\` included: it is a literal character in filter values.
            Token::Literal(c) => regex_syntax::escape_into(c.encode_utf8(&mut [0; 4]), &mut regex),
            Token::AnyOne => regex.push('.'),
            Token::AnyRun => regex.push_str(".*"),
        }
    }
    regex.push_str(r"\z");
    regex
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glob::{FoldedText, PatternList, fold};

    /// What the filter stage hands the compiled list: the folded text.
    fn find(list: &CompiledList, text: &str) -> Option<usize> {
        list.find(Folded::of(&fold(text)))
    }

    fn matches(pattern: &str, text: &str) -> bool {
        find(&CompiledList::new([pattern]), text).is_some()
    }

    #[test]
    fn values_are_sorted_by_shape() {
        let list = CompiledList::new(["exact", "pre*", "*suf", "*sub*", "a?c", "*a?c*", "**"]);
        assert!(list.exact.is_some() && list.heads.is_some() && list.tails.is_some());
        assert!(list.substrings.is_some() && list.globs.is_some() && list.match_all == Some(6));
        assert_eq!(list.gated.len(), 1);
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
    fn a_gate_that_fails_does_not_stop_the_walk() {
        // `a?x` is gated by `a`, `*zq??y` by `y`: the gates are hit first, fail, and the
        // longer literals further down the tries still decide.
        let list = CompiledList::new(["a?x", "ab*", "*zq??y", "*qy"]);
        assert_eq!(list.gated.len(), 2);
        assert_eq!(find(&list, "ABQ"), Some(1));
        assert_eq!(find(&list, "AbX"), Some(0));
        assert_eq!(find(&list, "zzqy"), Some(3));
        assert_eq!(find(&list, "-ZQ12Y"), Some(2));
        assert_eq!(find(&list, "azy"), None);
        // Shared runs and duplicates in one trie.
        let list =
            CompiledList::new([r"c:\windows\*", r"C:\Windows\System32\*", r"c:\win*", r"c:\windows\*"]);
        assert_eq!(find(&list, r"C:\WINDOWS\SYSTEM32\x"), Some(2));
        assert_eq!(find(&list, r"c:\wim"), None);
        assert_eq!(find(&list, r"c:\w"), None);
    }

    #[test]
    fn tries_with_wide_nodes_and_long_labels_agree_with_the_plain_matcher() {
        // The property tests' few short values never give a node more than eight children (the
        // child search reads eight at a time) nor labels past 16 bytes (compared by words).
        let wide: Vec<String> = "0123456789abcdefghijklmnopqrstuvwxyz\0\u{e9}"
            .chars()
            .flat_map(|c| [format!("x{c}*"), format!("*{c}y")])
            .chain(["x\0nul*".to_string()])
            .collect();
        let mut texts: Vec<String> = Vec::new();
        for c in "09az\0\u{e9}~!".chars() {
            texts.extend([format!("x{c}"), format!("x{c}tail"), format!("{c}y"), format!("head{c}y")]);
        }
        texts.extend(["x\0nul", "x\0nu", "x", "y"].map(String::from));
        let list = CompiledList::new(wide.iter().map(String::as_str));
        for text in &texts {
            assert_eq!(find(&list, text).is_some(), reference(&wide, text).is_some(), "{text:?}");
        }
        assert!(find(&list, "xz-anything").is_some() && find(&list, "x~").is_none());

        // One long value per list, beside the wide ones: its whole label is compared, at every
        // length, and a text that differs in any one byte of it must not match.
        let long = "abcdefghijklmnopqrstuvwxyz0123456789_-=+abcdefghij";
        for len in 1..=long.len() {
            let (head, tail) = (&long[..len], &long[long.len() - len..]);
            let mut patterns = wide.clone();
            patterns.extend([format!("{head}*"), format!("*{tail}"), format!("{head}?*")]);
            let list = CompiledList::new(patterns.iter().map(String::as_str));
            // `~` at the other end keeps the other trie out of the answer.
            let mut texts = vec![format!("{head}~"), format!("{head}~~"), format!("~{tail}")];
            for at in 0..len {
                let changed = |text: &str| {
                    let mut bytes = text.as_bytes().to_vec();
                    bytes[at] = b'~';
                    String::from_utf8_lossy(&bytes).into_owned()
                };
                texts.extend([format!("{}~", changed(head)), format!("~{}", changed(tail))]);
            }
            for text in &texts {
                let expected = reference(&patterns, text).is_some();
                assert_eq!(find(&list, text).is_some(), expected, "{len}: {text:?}");
            }
        }
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
        let list = CompiledList::new(["*a?b*", huge.as_str()]);
        assert!(list.globs.is_none() && list.fallback.len() == 2);
        assert_eq!(find(&list, "AxB"), Some(0));
        assert_eq!(find(&list, "--AxB--"), Some(0));
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
