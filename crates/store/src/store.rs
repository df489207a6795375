//! [`Store`]: the redb-backed implementation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use watchpost_catalog::{Event, ReadMode, TableId};

use crate::codec;
use crate::{AppendReport, ConsumerStats, Limits, ReadQuery, StoreError, TableStats};

/// `(table, seq) -> codec bytes`. Key order within a table is insertion order.
const EVENTS: TableDefinition<(u16, u64), &[u8]> = TableDefinition::new("events");
const BY_TIME: TableDefinition<(u16, i64, u64), ()> = TableDefinition::new("events_by_time");
const BY_EID: TableDefinition<u128, (u16, u64)> = TableDefinition::new("events_by_eid");
/// `table -> (retained, evicted_max, evicted_expiry, drained)`.
const COUNTERS: TableDefinition<u16, (u64, u64, u64, u64)> = TableDefinition::new("table_counters");
/// `(table, consumer) -> (cursor seq, missed)`.
const CONSUMERS: TableDefinition<(u16, &str), (u64, u64)> = TableDefinition::new("consumer_cursors");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const NEXT_SEQ: &str = "next_seq";
const FORMAT_VERSION: &str = "format_version";
const CURRENT_FORMAT: u64 = 1;

/// The durable event store. `Send + Sync`: share it in an `Arc`. Writes (appends, drains,
/// consumer reads, expiry) are serialized by redb; plain `Retain` reads run concurrently with
/// them on a snapshot.
pub struct Store {
    db: Database,
    path: PathBuf,
    events_max: AtomicU64,
    events_expiry: AtomicU64,
}

/// What can go wrong inside one operation, before the path is attached.
enum Fault {
    Db(Box<redb::Error>),
    Corrupt { seq: u64, reason: String },
    Encode { table: u16, reason: String },
}

macro_rules! fault_from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for Fault {
            fn from(error: $error) -> Fault {
                Fault::Db(Box::new(error.into()))
            }
        }
    )*};
}
fault_from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[derive(Clone, Copy, Default)]
struct Counters {
    retained: u64,
    evicted_max: u64,
    evicted_expiry: u64,
    drained: u64,
}

impl Counters {
    fn from_tuple((retained, evicted_max, evicted_expiry, drained): (u64, u64, u64, u64)) -> Counters {
        Counters { retained, evicted_max, evicted_expiry, drained }
    }

    fn to_tuple(self) -> (u64, u64, u64, u64) {
        (self.retained, self.evicted_max, self.evicted_expiry, self.drained)
    }
}

/// One event chosen by a read: its sequence number and the decoded event.
type Selected = Vec<(u64, Event)>;

/// The tables of one write transaction.
struct WriteTables<'txn> {
    events: Table<'txn, (u16, u64), &'static [u8]>,
    by_time: Table<'txn, (u16, i64, u64), ()>,
    by_eid: Table<'txn, u128, (u16, u64)>,
    counters: Table<'txn, u16, (u64, u64, u64, u64)>,
    consumers: Table<'txn, (u16, &'static str), (u64, u64)>,
    meta: Table<'txn, &'static str, u64>,
}

impl<'txn> WriteTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<WriteTables<'txn>, Fault> {
        Ok(WriteTables {
            events: txn.open_table(EVENTS)?,
            by_time: txn.open_table(BY_TIME)?,
            by_eid: txn.open_table(BY_EID)?,
            counters: txn.open_table(COUNTERS)?,
            consumers: txn.open_table(CONSUMERS)?,
            meta: txn.open_table(META)?,
        })
    }

    fn counters(&self, table: u16) -> Result<Counters, Fault> {
        Ok(self.counters.get(table)?.map(|g| Counters::from_tuple(g.value())).unwrap_or_default())
    }

    /// Removes the eid index entry, unless it points at another event (a duplicate eid).
    fn unindex_eid(&mut self, eid: u128, table: u16, seq: u64) -> Result<(), Fault> {
        let removed = self.by_eid.remove(eid)?.map(|g| g.value());
        if let Some(other) = removed.filter(|&location| location != (table, seq)) {
            self.by_eid.insert(eid, other)?;
        }
        Ok(())
    }

    /// Evicts up to `count` of the table's oldest events; returns their sequence numbers.
    fn evict_oldest(&mut self, table: u16, count: u64) -> Result<Vec<u64>, Fault> {
        let mut removed = Vec::new();
        {
            let mut oldest = self.events.extract_from_if((table, 0)..=(table, u64::MAX), |_, _| true)?;
            while (removed.len() as u64) < count {
                let Some(entry) = oldest.next() else { break };
                let (key, value) = entry?;
                let seq = key.value().1;
                let header = codec::header(value.value()).map_err(|reason| Fault::Corrupt { seq, reason })?;
                removed.push((seq, header.time, header.eid.0));
            }
        }
        // One tree at a time: interleaving the trees is markedly slower (page cache locality).
        for &(seq, time, _) in &removed {
            self.by_time.remove((table, time, seq))?;
        }
        for &(seq, _, eid) in &removed {
            self.unindex_eid(eid, table, seq)?;
        }
        Ok(removed.into_iter().map(|(seq, _, _)| seq).collect())
    }

    /// Removes events whose time is before `cut`; returns their sequence numbers, ascending.
    fn expire_before(&mut self, table: u16, cut: i64) -> Result<Vec<u64>, Fault> {
        let mut expired = Vec::new();
        {
            let mut old = self.by_time.extract_from_if((table, i64::MIN, 0)..(table, cut, 0), |_, _| true)?;
            for entry in old.by_ref() {
                let (key, _) = entry?;
                expired.push(key.value().2);
            }
        }
        expired.sort_unstable();
        let mut eids = Vec::with_capacity(expired.len());
        for &seq in &expired {
            if let Some(removed) = self.events.remove((table, seq))? {
                let header =
                    codec::header(removed.value()).map_err(|reason| Fault::Corrupt { seq, reason })?;
                eids.push((header.eid.0, seq));
            }
        }
        for (eid, seq) in eids {
            self.unindex_eid(eid, table, seq)?;
        }
        Ok(expired)
    }

    /// Counts, for every consumer of the table, the removed events it had not read yet.
    fn note_missed(&mut self, table: u16, removed_ascending: &[u64]) -> Result<(), Fault> {
        if removed_ascending.is_empty() {
            return Ok(());
        }
        let mut updates = Vec::new();
        for entry in self.consumers.range::<(u16, &str)>((table, "")..)? {
            let (key, value) = entry?;
            let (owner, name) = key.value();
            if owner != table {
                break;
            }
            let (cursor, missed) = value.value();
            let unread = removed_ascending.len() - removed_ascending.partition_point(|&seq| seq <= cursor);
            if unread > 0 {
                updates.push((name.to_string(), cursor, missed + unread as u64));
            }
        }
        for (name, cursor, missed) in updates {
            self.consumers.insert((table, name.as_str()), (cursor, missed))?;
        }
        Ok(())
    }
}

/// Chooses the events a read returns, in insertion order. `after`: only sequence numbers above
/// it (a consumer's cursor; 0 for everything).
fn select(
    events: &impl ReadableTable<(u16, u64), &'static [u8]>,
    by_time: &impl ReadableTable<(u16, i64, u64), ()>,
    by_eid: &impl ReadableTable<u128, (u16, u64)>,
    table: u16,
    query: &ReadQuery,
    expiry_cut: i64,
    after: u64,
) -> Result<Selected, Fault> {
    let limit = query.limit.unwrap_or(usize::MAX);
    let mut selected = Vec::new();
    let Some((lower, upper)) = query.time_window(expiry_cut) else { return Ok(selected) };
    if limit == 0 {
        return Ok(selected);
    }
    let table_id = TableId(table);

    // Index lookups yield candidate sequence numbers, which are then fetched in insertion order.
    let candidates: Option<Vec<u64>> = if let Some(eids) = &query.eids {
        let mut seqs = Vec::new();
        for eid in eids {
            if let Some(location) = by_eid.get(eid.0)? {
                let (owner, seq) = location.value();
                if owner == table && seq > after {
                    seqs.push(seq);
                }
            }
        }
        Some(seqs)
    } else if query.has_time_bounds() {
        let mut seqs = Vec::new();
        for entry in by_time.range((table, lower, 0)..=(table, upper, u64::MAX))? {
            let seq = entry?.0.value().2;
            if seq > after {
                seqs.push(seq);
            }
        }
        Some(seqs)
    } else {
        None
    };

    let mut keep = |seq: u64, bytes: &[u8]| -> Result<bool, Fault> {
        let corrupt = |reason| Fault::Corrupt { seq, reason };
        let time = codec::header(bytes).map_err(corrupt)?.time;
        if (lower..=upper).contains(&time) {
            selected.push((seq, codec::decode(table_id, bytes).map_err(corrupt)?));
        }
        Ok(selected.len() < limit)
    };
    match candidates {
        Some(mut seqs) => {
            seqs.sort_unstable();
            seqs.dedup();
            for seq in seqs {
                let Some(value) = events.get((table, seq))? else { continue };
                if !keep(seq, value.value())? {
                    break;
                }
            }
        }
        None => {
            for entry in events.range((table, after.saturating_add(1))..=(table, u64::MAX))? {
                let (key, value) = entry?;
                if !keep(key.value().1, value.value())? {
                    break;
                }
            }
        }
    }
    Ok(selected)
}

fn newest_seq(
    events: &impl ReadableTable<(u16, u64), &'static [u8]>,
    table: u16,
) -> Result<Option<u64>, Fault> {
    match events.range((table, 0)..=(table, u64::MAX))?.next_back() {
        Some(entry) => Ok(Some(entry?.0.value().1)),
        None => Ok(None),
    }
}

impl Store {
    /// Opens (or creates) the store file, creating parent directories. Fails with
    /// [`StoreError::InUse`] if another process (or another `Store` in this one) has it open.
    pub fn open(path: &Path, limits: Limits) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|source| StoreError::CreateDir { path: path.to_path_buf(), source })?;
        }
        let db = Database::create(path).map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: path.to_path_buf() },
            other => StoreError::Open { path: path.to_path_buf(), source: Box::new(other.into()) },
        })?;
        let store = Store {
            db,
            path: path.to_path_buf(),
            events_max: AtomicU64::new(limits.events_max),
            events_expiry: AtomicU64::new(limits.events_expiry),
        };
        store.initialize()?;
        Ok(store)
    }

    /// Creates the tables (so that read transactions find them) and checks the format version.
    fn initialize(&self) -> Result<(), StoreError> {
        let found = self.run("open", || {
            let txn = self.db.begin_write()?;
            let found = {
                let mut tables = WriteTables::open(&txn)?;
                let found = tables.meta.get(FORMAT_VERSION)?.map(|g| g.value());
                if found.is_none() {
                    tables.meta.insert(FORMAT_VERSION, CURRENT_FORMAT)?;
                    tables.meta.insert(NEXT_SEQ, 1)?;
                }
                found
            };
            txn.commit()?;
            Ok(found)
        })?;
        match found {
            Some(found) if found != CURRENT_FORMAT => {
                Err(StoreError::Format { path: self.path.clone(), found, expected: CURRENT_FORMAT })
            }
            _ => Ok(()),
        }
    }

    /// Applied at the next append (`events_max`) and the next expire or read (`events_expiry`).
    pub fn set_limits(&self, limits: Limits) {
        self.events_max.store(limits.events_max, Ordering::Relaxed);
        self.events_expiry.store(limits.events_expiry, Ordering::Relaxed);
    }

    pub fn limits(&self) -> Limits {
        Limits {
            events_max: self.events_max.load(Ordering::Relaxed),
            events_expiry: self.events_expiry.load(Ordering::Relaxed),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn expiry_cut(&self, now: i64) -> i64 {
        let expiry = i64::try_from(self.events_expiry.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        now.saturating_sub(expiry)
    }

    fn run<T>(
        &self,
        operation: &'static str,
        body: impl FnOnce() -> Result<T, Fault>,
    ) -> Result<T, StoreError> {
        body().map_err(|fault| {
            let path = self.path.clone();
            match fault {
                Fault::Db(source) => StoreError::Database { path, operation, source },
                Fault::Corrupt { seq, reason } => StoreError::Corrupt { path, seq, reason },
                Fault::Encode { table, reason } => StoreError::Encode { path, table, reason },
            }
        })
    }

    /// Appends the events (of any tables) in one durable transaction: when this returns `Ok`,
    /// the events survive a crash. Then evicts the oldest events of every table now beyond
    /// `events_max`, counting them.
    pub fn append(&self, events: &[Event]) -> Result<AppendReport, StoreError> {
        if events.is_empty() {
            return Ok(AppendReport::default());
        }
        let events_max = self.events_max.load(Ordering::Relaxed);
        self.run("append", || {
            let txn = self.db.begin_write()?;
            let mut report = AppendReport::default();
            {
                let mut tables = WriteTables::open(&txn)?;
                let mut next_seq = tables.meta.get(NEXT_SEQ)?.map_or(1, |g| g.value());
                let mut appended_per_table: BTreeMap<u16, u64> = BTreeMap::new();
                let mut buf = Vec::with_capacity(512);
                let first_seq = next_seq;
                for event in events {
                    let table = event.table.0;
                    let seq = next_seq;
                    next_seq += 1;
                    codec::encode(event, &mut buf)
                        .map_err(|e| Fault::Encode { table, reason: e.to_string() })?;
                    tables.events.insert((table, seq), buf.as_slice())?;
                    *appended_per_table.entry(table).or_default() += 1;
                }
                // One tree at a time: interleaving the three inserts per event was 2x slower
                // (page cache locality).
                for (seq, event) in (first_seq..).zip(events) {
                    tables.by_time.insert((event.table.0, event.time, seq), ())?;
                }
                for (seq, event) in (first_seq..).zip(events) {
                    tables.by_eid.insert(event.eid.0, (event.table.0, seq))?;
                }
                tables.meta.insert(NEXT_SEQ, next_seq)?;
                for (table, appended) in appended_per_table {
                    let mut counters = tables.counters(table)?;
                    counters.retained += appended;
                    if counters.retained > events_max {
                        let evicted = tables.evict_oldest(table, counters.retained - events_max)?;
                        tables.note_missed(table, &evicted)?;
                        let evicted = evicted.len() as u64;
                        counters.retained -= evicted;
                        counters.evicted_max += evicted;
                        report.evicted += evicted;
                    }
                    tables.counters.insert(table, counters.to_tuple())?;
                    report.appended += appended;
                }
            }
            txn.commit()?;
            Ok(report)
        })
    }

    /// Removes events with `time < now - events_expiry` from every table; returns how many.
    /// Call it periodically: reads hide such events anyway, this frees their space.
    pub fn expire(&self, now: i64) -> Result<u64, StoreError> {
        let cut = self.expiry_cut(now);
        self.run("expire", || {
            let txn = self.db.begin_write()?;
            let mut total = 0;
            {
                let mut tables = WriteTables::open(&txn)?;
                let mut table_ids = Vec::new();
                for entry in tables.counters.iter()? {
                    table_ids.push(entry?.0.value());
                }
                for table in table_ids {
                    let expired = tables.expire_before(table, cut)?;
                    if expired.is_empty() {
                        continue;
                    }
                    tables.note_missed(table, &expired)?;
                    let mut counters = tables.counters(table)?;
                    let count = expired.len() as u64;
                    counters.retained = counters.retained.saturating_sub(count);
                    counters.evicted_expiry += count;
                    tables.counters.insert(table, counters.to_tuple())?;
                    total += count;
                }
            }
            if total == 0 {
                txn.abort()?;
            } else {
                txn.commit()?;
            }
            Ok(total)
        })
    }

    /// The table's events that satisfy `query`, in insertion order; never events with
    /// `time < query.now - events_expiry`.
    ///
    /// With [`ReadMode::Drain`] the returned events are deleted (counted as `drained`).
    ///
    /// With `query.consumer = Some(name)` only events inserted after `name`'s previous read of
    /// this table are candidates, and the read moves `name`'s cursor, durably and in the same
    /// transaction, to the newest event present in the table at read time — also past events
    /// that this read's other constraints (time, eid) excluded: a consumer that filters skips
    /// what it filtered out. The one exception is a `limit` that cuts the result short: then the
    /// cursor stops at the last returned event, so the next read continues from there. Each
    /// consumer therefore sees each event at most once, and exactly once if it reads without
    /// filters before the event is evicted (removals of unread events count as `missed`).
    /// Consumers are independent of each other and of reads without a consumer.
    pub fn read(&self, table: TableId, query: &ReadQuery) -> Result<Vec<Event>, StoreError> {
        let cut = self.expiry_cut(query.now);
        let table = table.0;
        if query.mode == ReadMode::Retain && query.consumer.is_none() {
            return self.run("read", || {
                let txn = self.db.begin_read()?;
                let events = txn.open_table(EVENTS)?;
                let by_time = txn.open_table(BY_TIME)?;
                let by_eid = txn.open_table(BY_EID)?;
                let selected = select(&events, &by_time, &by_eid, table, query, cut, 0)?;
                Ok(selected.into_iter().map(|(_, event)| event).collect())
            });
        }
        self.run("read", || {
            let txn = self.db.begin_write()?;
            let mut changed = false;
            let selected = {
                let mut tables = WriteTables::open(&txn)?;
                let consumer = query.consumer.as_deref();
                let (cursor, missed) = match consumer {
                    Some(name) => tables.consumers.get((table, name))?.map_or((0, 0), |g| g.value()),
                    None => (0, 0),
                };
                let selected =
                    select(&tables.events, &tables.by_time, &tables.by_eid, table, query, cut, cursor)?;
                if let Some(name) = consumer {
                    let cut_short = query.limit.is_some_and(|limit| selected.len() >= limit);
                    let new_cursor = if cut_short {
                        selected.last().map_or(cursor, |(seq, _)| *seq)
                    } else {
                        newest_seq(&tables.events, table)?.unwrap_or(0).max(cursor)
                    };
                    let known = tables.consumers.get((table, name))?.is_some();
                    if new_cursor != cursor || !known {
                        tables.consumers.insert((table, name), (new_cursor, missed))?;
                        changed = true;
                    }
                }
                if query.mode == ReadMode::Drain && !selected.is_empty() {
                    for (seq, _) in &selected {
                        tables.events.remove((table, *seq))?;
                    }
                    for (seq, event) in &selected {
                        tables.by_time.remove((table, event.time, *seq))?;
                    }
                    for (seq, event) in &selected {
                        tables.unindex_eid(event.eid.0, table, *seq)?;
                    }
                    let seqs: Vec<u64> = selected.iter().map(|(seq, _)| *seq).collect();
                    tables.note_missed(table, &seqs)?;
                    let mut counters = tables.counters(table)?;
                    counters.retained = counters.retained.saturating_sub(seqs.len() as u64);
                    counters.drained += seqs.len() as u64;
                    tables.counters.insert(table, counters.to_tuple())?;
                    changed = true;
                }
                selected
            };
            if changed {
                txn.commit()?;
            } else {
                txn.abort()?;
            }
            Ok(selected.into_iter().map(|(_, event)| event).collect())
        })
    }

    /// One entry per table that ever had events, by table id.
    pub fn stats(&self) -> Result<Vec<TableStats>, StoreError> {
        self.run("stats", || {
            let txn = self.db.begin_read()?;
            let counters = txn.open_table(COUNTERS)?;
            let by_time = txn.open_table(BY_TIME)?;
            let mut stats = Vec::new();
            for entry in counters.iter()? {
                let (key, value) = entry?;
                let table = key.value();
                let counts = Counters::from_tuple(value.value());
                let mut times = by_time.range((table, i64::MIN, 0)..=(table, i64::MAX, u64::MAX))?;
                let oldest_time = times.next().transpose()?.map(|(k, _)| k.value().1);
                let newest_time = times.next_back().transpose()?.map(|(k, _)| k.value().1).or(oldest_time);
                stats.push(TableStats {
                    table: TableId(table),
                    retained: counts.retained,
                    evicted_max: counts.evicted_max,
                    evicted_expiry: counts.evicted_expiry,
                    drained: counts.drained,
                    oldest_time,
                    newest_time,
                });
            }
            Ok(stats)
        })
    }

    /// Every consumer cursor, by table then name.
    pub fn consumers(&self) -> Result<Vec<ConsumerStats>, StoreError> {
        self.run("list consumers", || {
            let txn = self.db.begin_read()?;
            let consumers = txn.open_table(CONSUMERS)?;
            let mut list = Vec::new();
            for entry in consumers.iter()? {
                let (key, value) = entry?;
                let (table, name) = key.value();
                list.push(ConsumerStats {
                    table: TableId(table),
                    consumer: name.to_string(),
                    missed: value.value().1,
                });
            }
            Ok(list)
        })
    }
}
