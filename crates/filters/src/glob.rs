//! The plain matcher for case-insensitive `*`/`?` patterns: one pattern at a time.
//!
//! This is the reference the compiled matcher (`compiled.rs`) is tested against, the fallback for
//! a pattern list too large for the automata, and what `explain` uses to name the first value (in
//! config order) that matches. It also defines how patterns are tokenized and case-folded, which
//! the compiled matcher shares.
//!
//! Hand-written rather than taken from a glob crate: the filter values are Windows paths and
//! command lines, where `\` must be an ordinary character, but the common glob crates treat `\`
//! as an escape (or give `/` and `[` meanings the original extension never had).

/// One element of a pattern, already case-folded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    Literal(char),
    /// `?`: exactly one character.
    AnyOne,
    /// `*`: any run of characters, also none.
    AnyRun,
}

/// A compiled filter value.
#[derive(Clone, Debug)]
pub(crate) struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    pub(crate) fn new(pattern: &str) -> Glob {
        let mut tokens: Vec<Token> = Vec::with_capacity(pattern.len());
        for c in pattern.chars() {
            match c {
                // `**` is the same as `*`; keeping one makes backtracking cheaper.
                '*' if tokens.last() == Some(&Token::AnyRun) => {}
                '*' => tokens.push(Token::AnyRun),
                '?' => tokens.push(Token::AnyOne),
                c => tokens.extend(c.to_lowercase().map(Token::Literal)),
            }
        }
        Glob { tokens }
    }

    pub(crate) fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Whether the whole (folded) `text` matches. Classic wildcard matching: on a mismatch,
    /// retry from the last `*` with it swallowing one more character. Remembering only the last
    /// star suffices because a later star can absorb whatever an earlier one would have.
    pub(crate) fn matches<U: Unit>(&self, text: &[U]) -> bool {
        let tokens = &self.tokens;
        let (mut p, mut t) = (0, 0);
        // (token after the star, text position the star's run ends at)
        let mut backtrack: Option<(usize, usize)> = None;
        while t < text.len() {
            match tokens.get(p) {
                Some(Token::AnyRun) => {
                    backtrack = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                Some(Token::AnyOne) => {
                    p += 1;
                    t += 1;
                    continue;
                }
                Some(Token::Literal(c)) if *c == text[t].folded() => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
            match backtrack {
                Some((after_star, run_end)) => {
                    p = after_star;
                    t = run_end + 1;
                    backtrack = Some((after_star, run_end + 1));
                }
                None => return false,
            }
        }
        tokens[p..].iter().all(|token| *token == Token::AnyRun)
    }
}

/// A character of the text being matched, folded to lower case.
pub(crate) trait Unit: Copy {
    fn folded(self) -> char;
}

/// ASCII text is folded on the fly, so matching it needs no copy.
impl Unit for u8 {
    fn folded(self) -> char {
        char::from(self.to_ascii_lowercase())
    }
}

/// Non-ASCII text is folded into a `Vec<char>` up front (or is already folded).
impl Unit for char {
    fn folded(self) -> char {
        self
    }
}

/// A value's text, case-folded the same way the patterns are: each character replaced by its
/// Unicode lower case (char by char, so `Σ` always becomes `σ`, unlike `str::to_lowercase`,
/// which writes a word-final `ς`). A character whose lower case is several characters (`İ`)
/// counts as that many for `?`, in patterns and texts alike.
pub(crate) enum FoldedText<'a> {
    Ascii(&'a [u8]),
    Chars(Vec<char>),
}

impl FoldedText<'_> {
    pub(crate) fn new(text: &str) -> FoldedText<'_> {
        if text.is_ascii() {
            FoldedText::Ascii(text.as_bytes())
        } else {
            FoldedText::Chars(text.chars().flat_map(char::to_lowercase).collect())
        }
    }
}

/// A text folded for the compiled lists (`compiled.rs`): every character replaced by its
/// Unicode lower case. Kept as bytes when ASCII, so that lowering it never has to prove again
/// that the result is UTF-8.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Folded<'a> {
    /// ASCII text, lower-cased: each byte is one character.
    Ascii(&'a [u8]),
    /// Other text, folded.
    Unicode(&'a str),
}

impl<'a> Folded<'a> {
    /// `folded`, which [`fold`] made.
    #[cfg(test)]
    pub(crate) fn of(folded: &'a str) -> Folded<'a> {
        if folded.is_ascii() { Folded::Ascii(folded.as_bytes()) } else { Folded::Unicode(folded) }
    }

    pub(crate) fn bytes(self) -> &'a [u8] {
        match self {
            Folded::Ascii(bytes) => bytes,
            Folded::Unicode(text) => text.as_bytes(),
        }
    }

    /// Whether `glob` matches the whole text, by the plain matcher.
    pub(crate) fn matches(self, glob: &Glob) -> bool {
        match self {
            Folded::Ascii(bytes) => glob.matches(bytes),
            // `?` is one character: compare characters, not bytes.
            Folded::Unicode(text) => glob.matches(&text.chars().collect::<Vec<char>>()),
        }
    }
}

/// Writes the ASCII lower case of `text` into `out` (as long as `text`) and tells whether `text`
/// is ASCII; if it is not, `out` holds nothing useful. Eight bytes at a time, the last word
/// overlapping the one before: this runs on every text judged, and `make_ascii_lowercase` goes
/// byte by byte.
pub(crate) fn lower_ascii(text: &[u8], out: &mut [u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let n = text.len();
    if n < 8 {
        let mut high = 0;
        for (out, &byte) in out.iter_mut().zip(text) {
            high |= byte;
            *out = byte.to_ascii_lowercase();
        }
        return high < 0x80;
    }
    let mut high = 0;
    let mut at = 0;
    while at < n {
        // The last word may overlap the one before: it writes the same bytes again.
        let from = at.min(n - 8);
        let mut word = [0; 8];
        word.copy_from_slice(&text[from..from + 8]);
        let word = u64::from_le_bytes(word);
        high |= word;
        // Below 0x80 neither sum carries into the next byte, and a byte's high bit then says
        // whether it is at least `A`, and whether it is above `Z`.
        let at_least_a = word.wrapping_add(0x3f3f_3f3f_3f3f_3f3f);
        let above_z = word.wrapping_add(0x2525_2525_2525_2525);
        let upper = at_least_a & !above_z & HIGH;
        // `upper >> 2` is 0x20, the case bit, in each upper-case letter.
        out[from..from + 8].copy_from_slice(&(word | (upper >> 2)).to_le_bytes());
        at += 8;
    }
    high & HIGH == 0
}

/// `text` case-folded as patterns and [`FoldedText`] are: each character replaced by its Unicode
/// lower case.
pub(crate) fn fold(text: &str) -> String {
    // Lower case is as long as the text but for a few letters (`İ`, `Ⱥ`): one allocation.
    let mut folded = String::with_capacity(text.len() + 8);
    folded.extend(text.chars().flat_map(char::to_lowercase));
    folded
}

/// The values of one filter (one column's include or exclude list), matched one after the other.
#[derive(Clone, Debug, Default)]
pub(crate) struct PatternList {
    globs: Vec<Glob>,
}

impl PatternList {
    pub(crate) fn new<'p>(patterns: impl IntoIterator<Item = &'p str>) -> PatternList {
        PatternList { globs: patterns.into_iter().map(Glob::new).collect() }
    }

    /// Index of the first pattern that matches the whole text.
    pub(crate) fn first_match(&self, text: &FoldedText) -> Option<usize> {
        match text {
            FoldedText::Ascii(bytes) => self.globs.iter().position(|g| g.matches(bytes)),
            FoldedText::Chars(chars) => self.globs.iter().position(|g| g.matches(chars)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> bool {
        PatternList::new([pattern]).first_match(&FoldedText::new(text)).is_some()
    }

    #[test]
    fn lower_ascii_lowers_every_byte_at_every_length_and_notices_non_ascii() {
        // Every ASCII byte (the bounds of `A..=Z` are where the word arithmetic could slip),
        // at every position of texts long and short enough for each path of the word loop.
        let ascii: Vec<u8> = (0..=0x7f).collect();
        for len in 0..=40 {
            for start in 0..ascii.len() {
                let text: Vec<u8> = ascii.iter().cycle().skip(start).take(len).copied().collect();
                let mut out = vec![0xff; len];
                assert!(lower_ascii(&text, &mut out), "{text:?}");
                assert_eq!(out, text.to_ascii_lowercase(), "{text:?}");
            }
            for at in 0..len {
                for high in [0x80, 0xc3, 0xff] {
                    let mut text = vec![b'A'; len];
                    text[at] = high;
                    assert!(!lower_ascii(&text, &mut vec![0; len]), "{len} {at} {high:#x}");
                }
            }
        }
    }

    #[test]
    fn star_matches_any_run_including_none() {
        assert!(matches("*", ""));
        assert!(matches("*", "anything"));
        assert!(matches("a*b", "ab"));
        assert!(matches("a*b", "axxxb"));
        assert!(!matches("a*b", "axxxbc"));
        assert!(matches("*a*b*", "xxaxxbxx"));
        assert!(matches("a**b", "ab"));
        // Needs backtracking past a first candidate.
        assert!(matches("*ab", "aab"));
        assert!(matches("a*ab*c", "aabxabxc"));
        assert!(!matches("a*ab*c", "aabxabx"));
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(!matches("a?c", "abbc"));
        assert!(matches("??", "äö"));
        assert!(!matches("?", ""));
    }

    #[test]
    fn matching_is_whole_text_and_case_insensitive() {
        assert!(matches("abc", "ABC"));
        assert!(!matches("abc", "abcd"));
        assert!(!matches("bc", "abc"));
        assert!(matches("ÄRGER", "ärger"));
        assert!(matches("ärger*", "ÄRGERLICH"));
        // Sigma folds the same wherever it stands.
        assert!(matches("*Σ", "ΑΣ"));
    }

    #[test]
    fn backslash_is_a_literal_character() {
        assert!(matches(r"C:\Windows\*", r"c:\windows\system32\cmd.exe"));
        assert!(!matches(r"C:\Windows\*", "C:/Windows/x"));
        assert!(matches(r"a\*", r"a\anything"));
        assert!(!matches(r"a\*", "a*"));
        assert!(matches(r"a\?", r"a\b"));
    }

    /// The same pattern as a regex over the folded text: the reference the matcher must agree with.
    fn reference(pattern: &str, text: &str) -> bool {
        let mut re = String::from("^");
        for c in pattern.chars() {
            match c {
                '*' => re.push_str("(?s:.*)"),
                '?' => re.push_str("(?s:.)"),
                c => c.to_lowercase().for_each(|l| re.push_str(&regex::escape(&l.to_string()))),
            }
        }
        re.push('$');
        let folded: String = text.chars().flat_map(char::to_lowercase).collect();
        regex::Regex::new(&re).unwrap().is_match(&folded)
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_a_regex_reference(pattern in "[abi*?\\\\Äßİ]{0,8}", text in "[abiAB\\\\äÄßİ]{0,10}") {
            proptest::prop_assert_eq!(matches(&pattern, &text), reference(&pattern, &text));
        }
    }
}
