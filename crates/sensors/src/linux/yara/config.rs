//! Reads the `yara` and top-level `file_paths` config sections (osquery's shape) into what the
//! scanner needs, collecting every problem instead of stopping at the first.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::paths::{PathPattern, PatternError};

/// A problem with the YARA configuration or its rule files. Every one is recorded in the
/// sensor's health; the parts of the config it does not touch keep working.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum YaraError {
    #[error("config section {section} must be an object of {expected}")]
    BadSection { section: &'static str, expected: &'static str },
    #[error("config {section}.{key} must be a list of strings")]
    NotAList { section: &'static str, key: String },
    #[error("yara.file_paths category {category} names group {group}, which yara.signatures does not define")]
    UnknownGroup { category: String, group: String },
    #[error("yara.file_paths category {category} has no paths: add it to the top-level file_paths")]
    CategoryWithoutPaths { category: String },
    #[error("file_paths category {category}: path {path} {reason}")]
    BadPath { category: String, path: String, reason: PatternError },
    #[error("yara group {group}: cannot read rule file {path}: {reason}")]
    UnreadableRuleFile { group: String, path: PathBuf, reason: String },
    #[error("yara group {group}: rule file {path} line {line}: {message}")]
    BadRule { group: String, path: PathBuf, line: usize, message: String },
}

/// A `yara.file_paths` category: where its files are and which rule groups scan them.
#[derive(Clone, Debug)]
pub struct CategorySpec {
    pub name: String,
    pub patterns: Vec<PathPattern>,
    pub groups: Vec<String>,
}

/// The YARA part of a config, before the rules are compiled.
#[derive(Clone, Debug, Default)]
pub struct YaraSpec {
    /// `yara.signatures`: group name to rule files, in config order per group.
    pub groups: BTreeMap<String, Vec<PathBuf>>,
    pub categories: Vec<CategorySpec>,
}

impl YaraSpec {
    /// Reads `yara` and `file_paths`; entries with problems are left out and reported.
    pub fn parse(yara: Option<&Value>, file_paths: Option<&Value>) -> (YaraSpec, Vec<YaraError>) {
        let mut problems = Vec::new();
        let Some(yara) = yara else {
            return (YaraSpec::default(), problems);
        };
        let Some(yara) = yara.as_object() else {
            problems.push(YaraError::BadSection {
                section: "yara",
                expected: r#"{"signatures": {...}, "file_paths": {...}}"#,
            });
            return (YaraSpec::default(), problems);
        };
        let groups: BTreeMap<String, Vec<PathBuf>> = string_lists(
            yara.get("signatures"),
            "yara.signatures",
            "group names to rule files",
            &mut problems,
        )
        .into_iter()
        .map(|(group, files)| (group, files.into_iter().map(PathBuf::from).collect()))
        .collect();
        let category_groups =
            string_lists(yara.get("file_paths"), "yara.file_paths", "categories to groups", &mut problems);
        let category_paths = string_lists(file_paths, "file_paths", "categories to paths", &mut problems);

        let mut categories = Vec::new();
        for (category, named_groups) in category_groups {
            let mut known = Vec::new();
            for group in named_groups {
                if groups.contains_key(&group) {
                    known.push(group);
                } else {
                    problems.push(YaraError::UnknownGroup { category: category.clone(), group });
                }
            }
            let Some(paths) = category_paths.get(&category) else {
                problems.push(YaraError::CategoryWithoutPaths { category });
                continue;
            };
            let mut patterns = Vec::new();
            for path in paths {
                match PathPattern::parse(path) {
                    Ok(pattern) => patterns.push(pattern),
                    Err(reason) => problems.push(YaraError::BadPath {
                        category: category.clone(),
                        path: path.clone(),
                        reason,
                    }),
                }
            }
            categories.push(CategorySpec { name: category, patterns, groups: known });
        }
        (YaraSpec { groups, categories }, problems)
    }
}

/// An object of string lists (`{KEY: [TEXT, ...]}`); absent means empty.
fn string_lists(
    value: Option<&Value>,
    section: &'static str,
    expected: &'static str,
    problems: &mut Vec<YaraError>,
) -> BTreeMap<String, Vec<String>> {
    let mut lists = BTreeMap::new();
    let Some(value) = value else {
        return lists;
    };
    let Some(object) = value.as_object() else {
        problems.push(YaraError::BadSection { section, expected });
        return lists;
    };
    for (key, list) in object {
        let texts: Option<Vec<String>> =
            list.as_array().and_then(|items| items.iter().map(|i| i.as_str().map(str::to_string)).collect());
        match texts {
            Some(texts) => {
                lists.insert(key.clone(), texts);
            }
            None => problems.push(YaraError::NotAList { section, key: key.clone() }),
        }
    }
    lists
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    #[test]
    fn reads_osquery_shape() {
        let yara = json!({
            "signatures": {"malware": ["/r/a.yar", "/r/b.yar"], "tools": ["/r/t.yar"]},
            "file_paths": {"downloads": ["malware", "tools"]}
        });
        let paths = json!({"downloads": ["/home/%/Downloads/%%"], "etc": ["/etc/%%"]});
        let (spec, problems) = YaraSpec::parse(Some(&yara), Some(&paths));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(spec.groups["malware"], [PathBuf::from("/r/a.yar"), PathBuf::from("/r/b.yar")]);
        assert_eq!(spec.categories.len(), 1, "only categories yara.file_paths names");
        let downloads = &spec.categories[0];
        assert_eq!(downloads.name, "downloads");
        assert_eq!(downloads.groups, ["malware", "tools"]);
        assert!(downloads.patterns[0].matches(Path::new("/home/ann/Downloads/x.exe")));
    }

    #[test]
    fn problems_name_what_to_fix_and_the_rest_is_kept() {
        let yara = json!({
            "signatures": {"good": ["/r/g.yar"], "bad": "/r/b.yar"},
            "file_paths": {"a": ["good", "missing"], "b": ["good"], "c": ["good"]}
        });
        let paths = json!({"a": ["relative/path", "/ok/%%"], "c": ["/c"]});
        let (spec, problems) = YaraSpec::parse(Some(&yara), Some(&paths));
        let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "config yara.signatures.bad must be a list of strings",
                "yara.file_paths category a names group missing, which yara.signatures does not define",
                "file_paths category a: path relative/path is not an absolute path (start it with /)",
                "yara.file_paths category b has no paths: add it to the top-level file_paths",
            ]
        );
        let names: Vec<&str> = spec.categories.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(spec.categories[0].groups, ["good"]);
        assert_eq!(spec.categories[0].patterns.len(), 1);
    }

    #[test]
    fn no_yara_section_means_nothing_to_do() {
        let (spec, problems) = YaraSpec::parse(None, Some(&json!({"a": ["/a"]})));
        assert!(spec.categories.is_empty() && spec.groups.is_empty() && problems.is_empty());
        let (_, problems) = YaraSpec::parse(Some(&json!([])), None);
        assert_eq!(problems.len(), 1);
    }
}
