//! How stored rows read on a page: times for people, dashes for nothing.

use crate::actions::ActionView;
use crate::model::format_unix_ms;
use crate::store::{AgentRow, AuditRow, EventRow};

fn when(ms: Option<i64>) -> String {
    ms.map_or_else(|| "–".to_owned(), format_unix_ms)
}

impl ActionView {
    pub fn due_text(&self) -> String {
        when(self.due_at_ms)
    }

    pub fn owner_text(&self) -> String {
        self.owner.clone().unwrap_or_else(|| "–".to_owned())
    }
}

impl EventRow {
    pub fn at_text(&self) -> String {
        format_unix_ms(self.at_ms)
    }

    pub fn risk_text(&self) -> String {
        when(self.risk_expires_at_ms)
    }
}

impl AuditRow {
    pub fn at_text(&self) -> String {
        format_unix_ms(self.at_ms)
    }
}

impl AgentRow {
    pub fn enrolled_text(&self) -> String {
        format_unix_ms(self.enrolled_at_ms)
    }

    pub fn last_contact_text(&self) -> String {
        self.last_contact_ms
            .map_or_else(|| "never".to_owned(), format_unix_ms)
    }

    pub fn certificate_text(&self) -> String {
        when(self.certificate_not_after_ms)
    }
}
