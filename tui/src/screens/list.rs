//! The state every table screen shares: rows from the daemon and which one
//! is selected, kept in range whenever the rows change.

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
    pub items: Remote<Vec<T>>,
    selected: usize,
}

impl<T> Default for ListView<T> {
    fn default() -> Self {
        ListView {
            items: Remote::Loading,
            selected: 0,
        }
    }
}

impl<T> ListView<T> {
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
        self.items = Remote::from_result(result);
        self.selected = clamp(self.selected, self.len());
    }

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
