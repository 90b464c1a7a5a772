//! A one-line text input: typing, Backspace/Delete, Left/Right/Home/End.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextInput {
    value: String,
    /// In characters, not bytes.
    cursor: usize,
}

impl TextInput {
    pub fn new(value: impl Into<String>) -> TextInput {
        let value = value.into();
        let cursor = value.chars().count();
        TextInput { value, cursor }
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    pub fn cursor(&self) -> usize {
        self.cursor
    }

    pub fn set(&mut self, value: impl Into<String>) {
        *self = TextInput::new(value);
    }

    /// Whether the key edited the text or moved the cursor.
    pub fn handle_key(&mut self, key: &KeyEvent) -> bool {
        if key.modifiers.contains(KeyModifiers::CONTROL)
            || key.modifiers.contains(KeyModifiers::ALT)
        {
            return false;
        }
        match key.code {
            KeyCode::Char(c) => {
                let at = self.byte_index(self.cursor);
                self.value.insert(at, c);
                self.cursor += 1;
            }
            KeyCode::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                let at = self.byte_index(self.cursor);
                self.value.remove(at);
            }
            KeyCode::Delete if self.cursor < self.value.chars().count() => {
                let at = self.byte_index(self.cursor);
                self.value.remove(at);
            }
            KeyCode::Left => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Right => self.cursor = (self.cursor + 1).min(self.value.chars().count()),
            KeyCode::Home => self.cursor = 0,
            KeyCode::End => self.cursor = self.value.chars().count(),
            KeyCode::Backspace | KeyCode::Delete => {}
            _ => return false,
        }
        true
    }

    fn byte_index(&self, chars: usize) -> usize {
        self.value
            .char_indices()
            .nth(chars)
            .map_or(self.value.len(), |(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn edits_at_the_cursor() {
        let mut input = TextInput::new("lead");
        for c in ".*".chars() {
            input.handle_key(&key(KeyCode::Char(c)));
        }
        assert_eq!(input.value(), "lead.*");
        input.handle_key(&key(KeyCode::Home));
        input.handle_key(&key(KeyCode::Delete));
        input.handle_key(&key(KeyCode::Char('L')));
        assert_eq!(input.value(), "Lead.*");
        input.handle_key(&key(KeyCode::End));
        input.handle_key(&key(KeyCode::Backspace));
        assert_eq!(input.value(), "Lead.");
        assert_eq!(input.cursor(), 5);
        assert!(!input.handle_key(&key(KeyCode::Enter)));
    }
}
