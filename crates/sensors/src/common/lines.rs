//! Splitting a byte stream that arrives in arbitrary chunks into lines.
//!
//! Hand-written because the standard `BufRead::read_until` cannot resume a partial line across
//! reads of a file that is still growing, and it cannot bound a line's length.

/// A line as the splitter hands it out: without its `\n` or `\r\n`.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub bytes: &'a [u8],
    /// The line was longer than the limit; `bytes` holds its first `limit` bytes and the rest
    /// up to the next newline was dropped.
    pub truncated: bool,
}

/// Keeps the unfinished end of the stream between chunks.
#[derive(Debug)]
pub struct LineSplitter {
    max_line: usize,
    partial: Vec<u8>,
    /// The current line already went out truncated: drop bytes until the next newline.
    discarding: bool,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter { max_line: max_line.max(1), partial: Vec::new(), discarding: false }
    }

    /// Feeds the next chunk of the stream; `on_line` gets every line completed by it, in order.
    /// A line over the limit goes out truncated as soon as the limit is reached.
    pub fn push(&mut self, mut chunk: &[u8], on_line: &mut dyn FnMut(Line<'_>)) {
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|&b| b == b'\n');
            let (piece, rest) = match newline {
                Some(at) => (&chunk[..at], Some(&chunk[at + 1..])),
                None => (chunk, None),
            };
            if !self.discarding {
                let room = self.max_line - self.partial.len();
                if piece.len() <= room {
                    self.partial.extend_from_slice(piece);
                } else {
                    self.partial.extend_from_slice(&piece[..room]);
                    on_line(Line { bytes: &self.partial, truncated: true });
                    self.partial.clear();
                    self.discarding = true;
                }
            }
            match rest {
                Some(rest) => {
                    if !self.discarding {
                        on_line(Line { bytes: strip_cr(&self.partial), truncated: false });
                    }
                    self.partial.clear();
                    self.discarding = false;
                    chunk = rest;
                }
                None => chunk = &[],
            }
        }
    }

    /// Ends the stream: an unfinished last line goes out as it is (used when the file it came
    /// from was rotated away or truncated, so it will never be completed).
    pub fn finish(&mut self, on_line: &mut dyn FnMut(Line<'_>)) {
        if !self.partial.is_empty() {
            on_line(Line { bytes: strip_cr(&self.partial), truncated: false });
        }
        self.partial.clear();
        self.discarding = false;
    }

    /// Bytes of an unfinished line waiting for their newline.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max_line: usize, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut splitter = LineSplitter::new(max_line);
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, &mut |line| {
                lines.push((String::from_utf8_lossy(line.bytes).into_owned(), line.truncated))
            });
        }
        lines
    }

    fn texts(lines: Vec<(String, bool)>) -> Vec<String> {
        lines.into_iter().map(|(text, _)| text).collect()
    }

    #[test]
    fn lines_split_on_newline_and_lose_crlf() {
        assert_eq!(texts(split(100, &[b"one\ntwo\r\nthree\n"])), ["one", "two", "three"]);
    }

    #[test]
    fn partial_line_waits_for_its_newline_across_chunks() {
        assert_eq!(texts(split(100, &[b"hel", b"lo wo", b"rld\nnext"])), ["hello world"]);
        // A CR at the end of one chunk and the LF at the start of the next are still one CRLF.
        assert_eq!(texts(split(100, &[b"a\r", b"\nb\n"])), ["a", "b"]);
    }

    #[test]
    fn empty_lines_are_lines() {
        assert_eq!(texts(split(100, &[b"\n\r\nx\n"])), ["", "", "x"]);
    }

    #[test]
    fn a_line_over_the_limit_goes_out_truncated_once() {
        let lines = split(4, &[b"abcdefgh", b"ij\nok\n"]);
        assert_eq!(lines, [("abcd".to_string(), true), ("ok".to_string(), false)]);
        // Exactly the limit is no truncation.
        assert_eq!(split(4, &[b"abcd\n"]), [("abcd".to_string(), false)]);
        // Limit reached exactly at a chunk end, newline in the next chunk: still one line.
        assert_eq!(split(4, &[b"ab", b"cd", b"\n"]), [("abcd".to_string(), false)]);
    }

    #[test]
    fn finish_flushes_an_unfinished_line() {
        let mut splitter = LineSplitter::new(100);
        let mut lines = Vec::new();
        splitter.push(b"done\nhalf", &mut |l| lines.push(l.bytes.to_vec()));
        assert_eq!(splitter.pending(), 4);
        splitter.finish(&mut |l| lines.push(l.bytes.to_vec()));
        assert_eq!(lines, [b"done".to_vec(), b"half".to_vec()]);
        assert_eq!(splitter.pending(), 0);
    }
}
