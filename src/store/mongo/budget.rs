//! The AI budgets' ledger in MongoDB: one document changed by compare-and-swap.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::doc;
use serde::{Deserialize, Serialize};

use super::{is_duplicate_key, MongoStore, BUDGET, LEDGER, MAX_CAS_ROUNDS};
use crate::model::budget::{BudgetLedger, Caps, Exhausted};
use crate::store::{BudgetStore, StoreError};

/// The AI budgets' ledger document: changed by compare-and-swap on `rev`, so instances
/// sharing the database take diagnoses from one budget.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LedgerDoc {
    #[serde(rename = "_id")]
    id: String,
    rev: i64,
    ledger: BudgetLedger,
}

impl MongoStore {
    /// Applies `change` to the ledger by compare-and-swap and returns its result.
    async fn change_ledger<T>(
        &self,
        mut change: impl FnMut(&mut BudgetLedger) -> T,
    ) -> Result<T, StoreError> {
        let budget = self.db.collection::<LedgerDoc>(BUDGET);
        for _ in 0..MAX_CAS_ROUNDS {
            let current = budget.find_one(doc! { "_id": LEDGER }).await?;
            let (rev, mut ledger) = match current {
                Some(doc) => (Some(doc.rev), doc.ledger),
                None => (None, BudgetLedger::default()),
            };
            let result = change(&mut ledger);
            let next = LedgerDoc {
                id: LEDGER.into(),
                rev: rev.unwrap_or(0) + 1,
                ledger,
            };
            let written = match rev {
                // The first change: whoever inserts first wins, the other tries again.
                None => match budget.insert_one(&next).await {
                    Ok(_) => true,
                    Err(e) if is_duplicate_key(&e) => false,
                    Err(e) => return Err(e.into()),
                },
                Some(rev) => {
                    budget
                        .replace_one(doc! { "_id": LEDGER, "rev": rev }, &next)
                        .await?
                        .matched_count
                        == 1
                }
            };
            if written {
                return Ok(result);
            }
        }
        Err(StoreError::Task(
            "the AI budget ledger kept changing under this instance".into(),
        ))
    }
}

#[async_trait]
impl BudgetStore for MongoStore {
    async fn admit_ai(
        &self,
        now: DateTime<Utc>,
        caps: Caps,
    ) -> Result<Result<(), Exhausted>, StoreError> {
        self.change_ledger(|ledger| ledger.admit(now, caps)).await
    }

    async fn spend_ai(&self, now: DateTime<Utc>, tokens: u64) -> Result<(), StoreError> {
        self.change_ledger(|ledger| ledger.spend(now, tokens)).await
    }
}
