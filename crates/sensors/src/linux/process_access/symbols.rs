//! The function at an address of a process, from the ELF file mapped there: the address is
//! turned into a file offset (the mapping's start and offset from `/proc/PID/maps`), the file
//! offset into the file's own virtual address (its `PT_LOAD` segments), and that is looked up in
//! the code symbols of `.symtab` and `.dynsym` (stripped files keep `.dynsym`: exported
//! functions only). The `object` crate parses the ELF, reading only the parts it needs; the
//! symbols of each file are kept per file version (device, inode, mtime, size).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

/// Symbol tables kept; more and the cache starts afresh (libc's is about 3,000 names).
const MAX_FILES: usize = 32;

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    /// The path, or a pseudo name (`[heap]`), or empty for anonymous memory.
    pub path: String,
}

/// The mapping holding `address` in a `/proc/PID/maps` text. A deleted file's path has its
/// ` (deleted)` suffix removed.
pub fn mapping_at(maps: &str, address: u64) -> Option<MapsEntry> {
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let (start, end) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?);
        if !(start..end).contains(&address) {
            return None;
        }
        let _permissions = fields.next()?;
        let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
        // dev, inode, then the path (which may contain spaces).
        let path = fields.skip(2).collect::<Vec<_>>().join(" ");
        let path = path.strip_suffix(" (deleted)").unwrap_or(&path).to_string();
        Some(MapsEntry { start, end, offset, path })
    })
}

#[derive(Clone, Debug)]
struct Symbol {
    address: u64,
    size: u64,
    /// Lower is preferred among symbols at one address: global, weak, local.
    rank: u8,
    name: Box<str>,
}

/// The code symbols of one ELF file and how its file offsets map to its addresses.
#[derive(Debug, Default)]
pub struct SymbolTable {
    /// (file offset, file size, virtual address) of each loadable segment.
    segments: Vec<(u64, u64, u64)>,
    /// Sorted by address, then preference.
    symbols: Vec<Symbol>,
}

impl SymbolTable {
    /// Reads the symbols of the ELF file `file`.
    pub fn read(file: File) -> Result<SymbolTable, object::Error> {
        let data = object::ReadCache::new(file);
        let elf = object::File::parse(&data)?;
        let segments = elf
            .segments()
            .map(|segment| {
                let (offset, size) = segment.file_range();
                (offset, size, segment.address())
            })
            .collect();
        let mut symbols: Vec<Symbol> = elf
            .symbols()
            .chain(elf.dynamic_symbols())
            .filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && s.address() != 0)
            .filter_map(|s| {
                let name = s.name().ok().filter(|n| !n.is_empty())?;
                let rank = if s.is_weak() {
                    1
                } else if s.is_global() {
                    0
                } else {
                    2
                };
                Some(Symbol { address: s.address(), size: s.size(), rank, name: name.into() })
            })
            .collect();
        symbols.sort_by(|a, b| (a.address, a.rank, &a.name).cmp(&(b.address, b.rank, &b.name)));
        symbols.dedup_by(|a, b| a.address == b.address && a.name == b.name);
        Ok(SymbolTable { segments, symbols })
    }

    /// The function holding the byte at `file_offset` of the file: `name` at its first byte,
    /// `name+0xOFFSET` inside it.
    pub fn function_at_file_offset(&self, file_offset: u64) -> Option<String> {
        let address = self.segments.iter().find_map(|&(offset, size, address)| {
            (offset..offset.saturating_add(size))
                .contains(&file_offset)
                .then(|| file_offset - offset + address)
        })?;
        self.function_at(address)
    }

    /// The function holding the file's virtual address `address`.
    pub fn function_at(&self, address: u64) -> Option<String> {
        let end = self.symbols.partition_point(|s| s.address <= address);
        let nearest = self.symbols.get(end.checked_sub(1)?)?.address;
        let start = self.symbols[..end].partition_point(|s| s.address < nearest);
        // Aliases share the address; the list is sorted by preference within it.
        let symbol = self.symbols[start..end]
            .iter()
            .find(|s| address < s.address.saturating_add(s.size) || (s.size == 0 && address == s.address))?;
        let offset = address - symbol.address;
        Some(if offset == 0 { symbol.name.to_string() } else { format!("{}+{offset:#x}", symbol.name) })
    }
}

/// A file's (device, inode).
type Identity = (u64, u64);

#[derive(Clone, Copy, PartialEq, Eq)]
struct Version {
    modified_s: i64,
    modified_ns: i64,
    size: u64,
}

/// Symbol tables per file version.
#[derive(Default)]
pub struct Symbolizer {
    /// (device, inode) -> the symbols of one version of the file (`None`: not ELF).
    files: HashMap<Identity, (Version, Option<Arc<SymbolTable>>)>,
}

impl Symbolizer {
    /// The function at `address` in process `pid` (under `proc_root`), given its maps text;
    /// `None` when the address is not in a mapped file or the file has no symbol there.
    pub fn function_at(&mut self, proc_root: &Path, pid: u32, maps: &str, address: u64) -> Option<String> {
        let mapping = mapping_at(maps, address)?;
        if !mapping.path.starts_with('/') {
            return None;
        }
        // The map_files entry is the mapped file itself even when the path was replaced.
        let exact = proc_root
            .join(pid.to_string())
            .join("map_files")
            .join(format!("{:x}-{:x}", mapping.start, mapping.end));
        let file = File::open(exact).or_else(|_| File::open(PathBuf::from(&mapping.path))).ok()?;
        let table = self.table(file)?;
        table.function_at_file_offset(address - mapping.start + mapping.offset)
    }

    fn table(&mut self, file: File) -> Option<Arc<SymbolTable>> {
        let meta = file.metadata().ok()?;
        let identity = (meta.dev(), meta.ino());
        let version = Version { modified_s: meta.mtime(), modified_ns: meta.mtime_nsec(), size: meta.size() };
        if let Some((known, table)) = self.files.get(&identity)
            && *known == version
        {
            return table.clone();
        }
        // Not ELF, or damaged: remembered as having no symbols.
        let table = SymbolTable::read(file).ok().map(Arc::new);
        if self.files.len() >= MAX_FILES {
            self.files.clear();
        }
        self.files.insert(identity, (version, table.clone()));
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_give_start_offset_and_path() {
        let maps = "7f0000001000-7f0000003000 r-xp 00002000 fe:01 99 /tmp/my lib.so (deleted)\n";
        let entry = mapping_at(maps, 0x7f0000002000).unwrap();
        assert_eq!(
            entry,
            MapsEntry {
                start: 0x7f0000001000,
                end: 0x7f0000003000,
                offset: 0x2000,
                path: "/tmp/my lib.so".into()
            }
        );
        assert_eq!(mapping_at(maps, 0x7f0000003000), None);
    }

    #[test]
    fn the_preferred_symbol_holding_an_address_is_named() {
        let symbol = |address, size, rank, name: &str| Symbol { address, size, rank, name: name.into() };
        let table = SymbolTable {
            segments: vec![(0x1000, 0x1000, 0x401000)],
            symbols: vec![
                symbol(0x401000, 0x10, 0, "__getpid"),
                symbol(0x401000, 0x10, 1, "getpid"),
                symbol(0x401020, 0, 2, "label"),
            ],
        };
        assert_eq!(table.function_at(0x401000).as_deref(), Some("__getpid"));
        assert_eq!(table.function_at(0x401004).as_deref(), Some("__getpid+0x4"));
        assert_eq!(table.function_at(0x401010), None, "past the end of the function");
        assert_eq!(table.function_at(0x401020).as_deref(), Some("label"));
        assert_eq!(table.function_at(0x400000), None);
        assert_eq!(table.function_at_file_offset(0x1004).as_deref(), Some("__getpid+0x4"));
        assert_eq!(table.function_at_file_offset(0x3000), None, "not in a loadable segment");
    }

    #[test]
    fn libc_exports_are_found_in_its_dynamic_symbols() {
        let libc = "/lib/x86_64-linux-gnu/libc.so.6";
        let Ok(file) = File::open(libc) else {
            println!("SKIPPED: no {libc}");
            return;
        };
        let table = SymbolTable::read(file).unwrap();
        let qsort = table.symbols.iter().find(|s| &*s.name == "qsort").expect("qsort is exported");
        assert_eq!(table.function_at(qsort.address).as_deref(), Some("qsort"));
        assert_eq!(table.function_at(qsort.address + 1).as_deref(), Some("qsort+0x1"));
    }
}
