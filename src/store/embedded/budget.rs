//! The AI budgets in SQLite: one row holding the ledger, changed in the writer's immediate
//! transaction, so two processes on one file cannot both take the last diagnosis.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::rows::{corrupt, to_json};
use super::EmbeddedStore;
use crate::model::budget::{BudgetLedger, Caps, Exhausted};
use crate::store::{BudgetStore, StoreError};

/// The ledger's row.
const LEDGER: &str = "ai";

impl EmbeddedStore {
    /// Applies `change` to the ledger in one write and returns its result.
    async fn change_ledger<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut BudgetLedger) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        self.with(move |conn| {
            let stored: Option<String> = conn
                .query_row("SELECT ledger FROM budget WHERE id = ?1", [LEDGER], |r| {
                    r.get(0)
                })
                .optional()?;
            let mut ledger: BudgetLedger = match stored {
                Some(json) => serde_json::from_str(&json)
                    .map_err(|e| corrupt("budget", format!("ledger: {e}")))?,
                None => BudgetLedger::default(),
            };
            let result = change(&mut ledger);
            conn.execute(
                "INSERT INTO budget (id, ledger) VALUES (?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET ledger = excluded.ledger",
                params![LEDGER, to_json("budget", &ledger)?],
            )?;
            Ok(result)
        })
        .await
    }
}

#[async_trait]
impl BudgetStore for EmbeddedStore {
    async fn admit_ai(
        &self,
        now: DateTime<Utc>,
        caps: Caps,
    ) -> Result<Result<(), Exhausted>, StoreError> {
        self.change_ledger(move |ledger| ledger.admit(now, caps))
            .await
    }

    async fn spend_ai(&self, now: DateTime<Utc>, tokens: u64) -> Result<(), StoreError> {
        self.change_ledger(move |ledger| ledger.spend(now, tokens))
            .await
    }
}
