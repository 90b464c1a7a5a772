//! The state every table screen shares: rows from the daemon, the `/` text
//! filter over them, and which shown row is selected, kept in range whenever
//! the rows or the filter change. Screens draw `items`, which holds only the
//! rows the filter lets through.

use crossterm::event::KeyEvent;
use ratatui::widgets::TableState;

use super::move_selection;
use crate::{
    api::{ApiResult, Remote},
    keys::KeyBindings,
    widgets::clamp,
};

#[derive(Debug)]
pub struct ListView<T> {
    /// What is shown: the loaded rows the filter lets through.
    pub items: Remote<Vec<T>>,
    /// Every loaded row.
    all: Vec<T>,
    /// Lower-case text every shown row contains; empty shows all.
    pub filter: String,
    selected: usize,
}

impl<T> Default for ListView<T> {
    fn default() -> Self {
        ListView {
            items: Remote::Loading,
            all: Vec::new(),
            filter: String::new(),
            selected: 0,
        }
    }
}

/// The text a row is found by with `/`.
pub trait Searchable {
    fn search_text(&self) -> String;
}

impl<T: Searchable + Clone> ListView<T> {
    /// New rows from the daemon, sorted by `order`.
    pub fn set_sorted(
        &mut self,
        result: ApiResult<Vec<T>>,
        order: impl FnMut(&T, &T) -> std::cmp::Ordering,
    ) {
        self.set(result.map(|mut rows| {
            rows.sort_by(order);
            rows
        }));
    }

    /// New rows from the daemon, in the order given.
    pub fn set(&mut self, result: ApiResult<Vec<T>>) {
        match result {
            Ok(rows) => {
                self.all = rows;
                self.apply_filter();
            }
            Err(error) => {
                self.all.clear();
                self.items = Remote::from_result(Err(error));
            }
        }
        self.selected = clamp(self.selected, self.len());
    }

    /// Shows only the rows whose text contains `text` (any case).
    pub fn set_filter(&mut self, text: &str) {
        self.filter = text.trim().to_lowercase();
        if self.items.loaded().is_some() {
            self.apply_filter();
        }
        self.selected = clamp(self.selected, self.len());
    }

    fn apply_filter(&mut self) {
        let shown = if self.filter.is_empty() {
            self.all.clone()
        } else {
            self.all
                .iter()
                .filter(|row| row.search_text().to_lowercase().contains(&self.filter))
                .cloned()
                .collect()
        };
        self.items = Remote::from_result(Ok(shown));
    }
}

impl<T> ListView<T> {
    /// Back to loading, until the next `set`.
    pub fn reload(&mut self) {
        self.items = Remote::Loading;
    }

    pub fn loaded(&self) -> Option<&Vec<T>> {
        self.items.loaded()
    }

    pub fn is_failed(&self) -> bool {
        self.items.is_failed()
    }

    pub fn len(&self) -> usize {
        self.items.loaded().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn selected(&self) -> Option<&T> {
        self.items.loaded().and_then(|rows| rows.get(self.selected))
    }

    pub fn select_next(&mut self) {
        self.selected = clamp(self.selected + 1, self.len());
    }

    /// Up/down/page/home/end; whether the key moved the selection.
    pub fn move_selection(&mut self, keys: &KeyBindings, key: &KeyEvent) -> bool {
        let len = self.len();
        move_selection(keys, key, &mut self.selected, len)
    }

    pub fn table_state(&self) -> TableState {
        TableState::default().with_selected(Some(self.selected))
    }
}

impl Searchable for hookyard::v1::Endpoint {
    fn search_text(&self) -> String {
        format!(
            "{} {} {} {}",
            self.id, self.url, self.tenant_id, self.description
        )
    }
}

impl Searchable for hookyard::v1::Subscription {
    fn search_text(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.id,
            self.name,
            self.patterns.join(" "),
            self.exclude.join(" "),
            self.target,
            self.description
        )
    }
}

impl Searchable for hookyard::v1::Source {
    fn search_text(&self) -> String {
        format!(
            "{} {} {} {}",
            self.id, self.name, self.tenant_id, self.description
        )
    }
}

impl Searchable for hookyard::v1::EventType {
    fn search_text(&self) -> String {
        format!("{} {} {}", self.id, self.pattern, self.description)
    }
}

impl Searchable for hookyard::v1::Flow {
    fn search_text(&self) -> String {
        format!(
            "{} {} {}",
            self.id,
            self.description,
            self.step_ids.join(" ")
        )
    }
}

impl Searchable for hookyard::v1::Delivery {
    fn search_text(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.id,
            self.event_id,
            self.event_name,
            self.subscription_name,
            self.target,
            self.last_error
        )
    }
}
