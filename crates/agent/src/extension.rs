//! Serving the catalog to osquery core: the adapter between [`Engine`] and the osquery
//! extension protocol (route info from the catalog, rows as osquery's string maps).

use std::collections::BTreeMap;
use std::sync::Arc;

use watchpost_catalog::{QueryContext, Table, TableSource};
use watchpost_osquery::TablePlugin;

/// The tables of this platform, served from `source`.
pub struct CatalogPlugin {
    tables: BTreeMap<String, Table>,
    source: Arc<dyn TableSource>,
}

impl CatalogPlugin {
    pub fn new(tables: Vec<Table>, source: Arc<dyn TableSource>) -> CatalogPlugin {
        CatalogPlugin { tables: tables.into_iter().map(|t| (t.name.clone(), t)).collect(), source }
    }

    /// `(name, route info)` for registration with core.
    pub fn registry(&self) -> Vec<(String, Vec<BTreeMap<String, String>>)> {
        self.tables.values().map(|t| (t.name.clone(), t.osquery_routes())).collect()
    }
}

impl TablePlugin for CatalogPlugin {
    fn routes(&self, table: &str) -> Option<Vec<BTreeMap<String, String>>> {
        self.tables.get(table).map(Table::osquery_routes)
    }

    fn generate(&self, table: &str, context: &QueryContext) -> Result<Vec<BTreeMap<String, String>>, String> {
        let table = self.tables.get(table).ok_or_else(|| format!("no such table: {table}"))?;
        let rows = self.source.generate(table, context).map_err(|e| e.to_string())?;
        // Core sends `colsUsed` (every column the query names anywhere, WHERE included):
        // the others would be encoded, sent and decoded for nothing.
        let wanted: Vec<bool> = table
            .columns
            .iter()
            .map(|c| context.columns_used.as_ref().is_none_or(|used| used.contains(&c.name)))
            .collect();
        Ok(rows
            .into_iter()
            .map(|row| {
                table
                    .columns
                    .iter()
                    .zip(row)
                    .zip(&wanted)
                    .filter(|(_, wanted)| **wanted)
                    .filter_map(|((column, value), _)| {
                        value.into_text().map(|text| (column.name.clone(), text))
                    })
                    .collect()
            })
            .collect())
    }
}
