//! Byte offsets to the 1-based line and column numbers that error messages show.

/// Line starts of one text, for turning parser byte offsets into line:column.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> LineIndex<'a> {
        let bytes = text.as_bytes();
        let mut line_starts = vec![0];
        for (i, &b) in bytes.iter().enumerate() {
            // A lone `\r` ends a line too (the parser treats it so, and old Mac files use it).
            if b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
                line_starts.push(i + 1);
            }
        }
        LineIndex { text, line_starts }
    }

    /// 1-based line and column (counted in characters) of the byte `offset`.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        let column = self.text.get(start..offset).map_or(offset - start, |s| s.chars().count());
        (line, column + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::LineIndex;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let index = LineIndex::new("ab\näbc\r\nx\ry");
        assert_eq!(index.position(0), (1, 1));
        assert_eq!(index.position(1), (1, 2));
        assert_eq!(index.position(3), (2, 1));
        // `ä` is two bytes but one column.
        assert_eq!(index.position(5), (2, 2));
        assert_eq!(index.position(9), (3, 1));
        assert_eq!(index.position(10), (3, 2));
        assert_eq!(index.position(11), (4, 1));
    }
}
