//! Human tables and machine JSON for the CLI's answers.

use std::io::Write;

use anyhow::Result;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The API's JSON documents, pretty-printed, for scripts.
    Json,
}

/// A table with left-aligned columns sized to their widest cell.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::new();
            for (i, cell) in cells.enumerate() {
                let width = widths.get(i).copied().unwrap_or(0);
                if i + 1 == widths.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(width.saturating_sub(cell.chars().count()) + 2));
                }
            }
            out.trim_end().to_owned() + "\n"
        };
        let mut out = line(&mut self.header.iter().copied());
        for row in &self.rows {
            out.push_str(&line(&mut row.iter().map(String::as_str)));
        }
        out
    }

    pub fn print(&self) -> Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(self.render().as_bytes())?;
        out.flush()?;
        Ok(())
    }
}

pub fn print_json(v: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// `-` for an absent value.
pub fn or_dash(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("-").to_owned()
}

/// A timestamp shortened to the second, in UTC as the API gives it.
pub fn when(v: Option<time::OffsetDateTime>, none: &str) -> String {
    match v {
        None => none.to_owned(),
        Some(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            format!("{} {:02}:{:02}:{:02}Z", t.date(), t.hour(), t.minute(), t.second())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["ID", "NAME", "STATE"]);
        t.row(vec!["1".into(), "a long name".into(), "active".into()]);
        t.row(vec!["22".into(), "-".into(), "wiped".into()]);
        assert_eq!(
            t.render(),
            "ID  NAME         STATE\n1   a long name  active\n22  -            wiped\n"
        );
    }

    #[test]
    fn timestamps() {
        let t = time::OffsetDateTime::parse(
            "2025-03-01T11:20:30.123456+01:00",
            &time::format_description::well_known::Rfc3339,
        )
        .ok();
        assert_eq!(when(t, "never"), "2025-03-01 10:20:30Z");
        assert_eq!(when(None, "never"), "never");
        assert_eq!(or_dash(Some("")), "-");
    }
}
