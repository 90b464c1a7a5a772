//! `?`: every key of every screen, grouped, generated from the bindings.

use ratatui::{
    layout::Rect,
    text::{Line, Span},
    widgets::Paragraph,
    Frame,
};

use crate::{
    keys::{Binding, KeyBindings},
    widgets::{dim_style, header_style, popup},
};

/// (heading, bindings) for each screen, in tab order.
fn groups(k: &KeyBindings) -> Vec<(&'static str, Vec<Binding>)> {
    vec![
        (
            "Everywhere",
            vec![k.next_tab, k.prev_tab, k.help, k.quit, k.back],
        ),
        (
            "Live",
            vec![k.pause, k.filter, k.open, k.retry, k.up, k.down, k.top],
        ),
        ("Delivery detail", vec![k.retry, k.up, k.down, k.back]),
        (
            "Subscriptions",
            vec![k.new, k.edit, k.delete, k.toggle, k.test, k.reload],
        ),
        (
            "Endpoints",
            vec![k.new, k.edit, k.delete, k.toggle, k.reload],
        ),
        ("Dead letters", vec![k.select, k.retry, k.open, k.reload]),
        (
            "Sources",
            vec![k.new, k.rotate, k.suspend, k.delete, k.reload],
        ),
        (
            "Forms",
            vec![k.next_field, k.prev_field, k.save, k.toggle, k.back],
        ),
    ]
}

pub fn render(frame: &mut Frame, area: Rect, keys: &KeyBindings) {
    let mut lines = vec![Line::styled("1-9 jumps to a screen", dim_style())];
    for (title, bindings) in groups(keys) {
        lines.push(Line::styled(title, header_style()));
        for b in bindings {
            lines.push(Line::from(vec![
                Span::raw(format!("  {:<9}", b.label)),
                Span::raw(b.action),
            ]));
        }
    }
    let height = (lines.len() as u16 + 2).min(area.height);
    let inner = popup(frame, area, 64, height, "Keys (Esc closes)");
    frame.render_widget(Paragraph::new(lines), inner);
}
