//! The line filter of a watched log file (`file_regex_pattern`).

use regex::RegexSet;

/// A `file_regex_pattern` that is not a valid regular expression.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid regex {pattern:?}: {problem}")]
pub struct PatternError {
    pub pattern: String,
    pub problem: String,
}

/// Checks one pattern on its own, so the message names the problem and the 1-based character
/// position in that pattern where it was found.
pub(crate) fn check_pattern(pattern: &str) -> Result<(), PatternError> {
    regex_syntax::Parser::new().parse(pattern).map(drop).map_err(|e| {
        let (kind, span) = match &e {
            regex_syntax::Error::Parse(e) => (e.kind().to_string(), *e.span()),
            regex_syntax::Error::Translate(e) => (e.kind().to_string(), *e.span()),
            other => {
                (other.to_string(), regex_syntax::ast::Span::splat(regex_syntax::ast::Position::new(0, 1, 1)))
            }
        };
        let at = pattern.get(..span.start.offset).map_or(1, |s| s.chars().count() + 1);
        PatternError {
            pattern: pattern.to_string(),
            problem: format!("{kind} (at character {at} of the pattern)"),
        }
    })
}

/// Decides which lines of a watched file become rows: with no patterns every line; otherwise a
/// line is kept when ANY pattern matches the WHOLE line (the original used full-match semantics,
/// which is why its examples wrap patterns in `(.*)`). Lines are passed without their `\n`.
#[derive(Clone, Debug)]
pub struct LineMatcher {
    set: Option<RegexSet>,
}

impl LineMatcher {
    /// Builds the matcher. Each pattern is checked alone first: wrapping an invalid pattern such
    /// as `a)|(b` in `^(?:…)$` could otherwise turn it into a valid one with another meaning.
    pub fn new(patterns: &[String]) -> Result<LineMatcher, PatternError> {
        if patterns.is_empty() {
            return Ok(LineMatcher { set: None });
        }
        for pattern in patterns {
            check_pattern(pattern)?;
        }
        let anchored = patterns.iter().map(|p| format!("^(?:{p})$"));
        let set = RegexSet::new(anchored).map_err(|e| PatternError {
            pattern: patterns.join(", "),
            problem: e.to_string().replace('\n', " "),
        })?;
        Ok(LineMatcher { set: Some(set) })
    }

    /// Whether `line` (without its line terminator) is recorded.
    pub fn keep(&self, line: &str) -> bool {
        self.set.as_ref().is_none_or(|set| set.is_match(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> LineMatcher {
        LineMatcher::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn no_patterns_keep_every_line() {
        let m = matcher(&[]);
        assert!(m.keep(""));
        assert!(m.keep("anything"));
    }

    #[test]
    fn patterns_must_match_the_whole_line() {
        let m = matcher(&["secret2", "(.*)error(.*)"]);
        assert!(m.keep("secret2"));
        assert!(!m.keep("my secret2 here"));
        assert!(m.keep("an error occurred"));
        assert!(!m.keep("all fine"));
    }

    #[test]
    fn alternation_stays_inside_the_anchors() {
        // Unwrapped, `^a|b$` would keep "axxx".
        let m = matcher(&["a|b"]);
        assert!(m.keep("a"));
        assert!(m.keep("b"));
        assert!(!m.keep("axxx"));
    }

    #[test]
    fn the_seed_patterns_match_as_documented() {
        let m = matcher(&[r"(.*) (\d+): \[([^\]]+)\] (.*)", r"((.|\r\n)*)(secret2)(.*)"]);
        assert!(m.keep("secret2"));
        assert!(m.keep("x 12: [w] y"));
        assert!(!m.keep("hellotail 5"));
    }

    #[test]
    fn an_invalid_pattern_is_reported_with_its_position() {
        let err = LineMatcher::new(&["ok".to_string(), "ab(c".to_string()]).unwrap_err();
        assert_eq!(err.pattern, "ab(c");
        assert_eq!(err.to_string(), "invalid regex \"ab(c\": unclosed group (at character 3 of the pattern)");
        let err = LineMatcher::new(&["a)|(b".to_string()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid regex \"a)|(b\": unopened group (at character 2 of the pattern)"
        );
    }
}
