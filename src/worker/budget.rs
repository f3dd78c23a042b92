//! Cost bounds on the AI: at most `Budget.DiagnosesPerHour` AI diagnoses in any hour and
//! `Budget.TokensPerDay` tokens in any 24 hours (0: unlimited). Over budget, a diagnosis
//! still runs, from the evidence alone. The ledger is in the store: every instance on it
//! shares the caps, and a restart keeps the windows.

use std::sync::Arc;

use chrono::Utc;

use crate::config::BudgetConfig;
use crate::model::budget::Caps;
use crate::model::report::Usage;
use crate::store::BudgetStore;

/// Why a diagnosis may not use the AI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The metric label (`diagnoses_per_hour`, `tokens_per_day`, `budget_unreadable`).
    pub label: &'static str,
    /// For the report.
    pub reason: String,
}

/// The AI budgets of the store this service uses.
pub struct Budget {
    caps: Caps,
    store: Arc<dyn BudgetStore>,
}

impl Budget {
    /// The budgets of this configuration, kept in `store`.
    pub fn new(config: &BudgetConfig, store: Arc<dyn BudgetStore>) -> Self {
        Self {
            caps: Caps {
                diagnoses_per_hour: config.diagnoses_per_hour,
                tokens_per_day: config.tokens_per_day,
            },
            store,
        }
    }

    /// Takes one AI diagnosis from the budget now, or says why not. With no caps the
    /// store is not asked. A ledger that cannot be read refuses: a cost bound that fails
    /// open is no bound.
    pub async fn admit(&self) -> Result<(), Refused> {
        if !self.caps.any() {
            return Ok(());
        }
        match self.store.admit_ai(Utc::now(), self.caps).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(spent)) => Err(Refused {
                label: spent.label(),
                reason: spent.reason(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "reading the AI budget failed");
                Err(Refused {
                    label: "budget_unreadable",
                    reason: "the AI budget (Budget.*) could not be read from the store".into(),
                })
            }
        }
    }

    /// Records what a diagnosis spent (only when a token cap is set).
    pub async fn spend(&self, usage: &Usage) {
        let tokens = usage.input_tokens + usage.output_tokens;
        if self.caps.tokens_per_day == 0 || tokens == 0 {
            return;
        }
        if let Err(e) = self.store.spend_ai(Utc::now(), tokens).await {
            tracing::warn!(error = %e, tokens, "recording the tokens spent failed");
        }
    }
}
