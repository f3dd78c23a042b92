//! Cost bounds on the AI: at most `Budget.DiagnosesPerHour` AI diagnoses in any hour and
//! `Budget.TokensPerDay` tokens in any 24 hours (0: unlimited). Over budget, a diagnosis
//! still runs, from the evidence alone. The windows are this process's (a restart starts
//! them afresh).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::BudgetConfig;
use crate::model::report::Usage;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Which budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// `Budget.DiagnosesPerHour`.
    DiagnosesPerHour(u64),
    /// `Budget.TokensPerDay`.
    TokensPerDay(u64),
}

impl Exhausted {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Exhausted::DiagnosesPerHour(_) => "diagnoses_per_hour",
            Exhausted::TokensPerDay(_) => "tokens_per_day",
        }
    }

    /// For the report.
    pub fn reason(self) -> String {
        match self {
            Exhausted::DiagnosesPerHour(n) => format!(
                "AI budget exhausted: {n} AI diagnoses in the last hour (Budget.DiagnosesPerHour)"
            ),
            Exhausted::TokensPerDay(n) => format!(
                "AI budget exhausted: {n} tokens spent in the last 24 hours (Budget.TokensPerDay)"
            ),
        }
    }
}

#[derive(Default)]
struct Windows {
    diagnoses: VecDeque<Instant>,
    tokens: VecDeque<(Instant, u64)>,
}

/// The AI budgets of this process.
pub struct Budget {
    diagnoses_per_hour: u64,
    tokens_per_day: u64,
    windows: Mutex<Windows>,
}

impl Budget {
    /// The budgets of this configuration.
    pub fn new(config: &BudgetConfig) -> Self {
        Self {
            diagnoses_per_hour: config.diagnoses_per_hour,
            tokens_per_day: config.tokens_per_day,
            windows: Mutex::default(),
        }
    }

    /// Takes one AI diagnosis from the budget at `now`, or says which budget is spent.
    pub fn admit(&self, now: Instant) -> Result<(), Exhausted> {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        while w
            .diagnoses
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            w.diagnoses.pop_front();
        }
        while w
            .tokens
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= DAY)
        {
            w.tokens.pop_front();
        }
        if self.diagnoses_per_hour > 0 && w.diagnoses.len() as u64 >= self.diagnoses_per_hour {
            return Err(Exhausted::DiagnosesPerHour(self.diagnoses_per_hour));
        }
        let spent: u64 = w.tokens.iter().map(|(_, n)| n).sum();
        if self.tokens_per_day > 0 && spent >= self.tokens_per_day {
            return Err(Exhausted::TokensPerDay(self.tokens_per_day));
        }
        w.diagnoses.push_back(now);
        Ok(())
    }

    /// Records what a diagnosis spent.
    pub fn spend(&self, now: Instant, usage: &Usage) {
        let tokens = usage.input_tokens + usage.output_tokens;
        if tokens > 0 {
            let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            w.tokens.push_back((now, tokens));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_hour: u64, per_day: u64) -> Budget {
        Budget::new(&BudgetConfig {
            diagnoses_per_hour: per_hour,
            tokens_per_day: per_day,
        })
    }

    #[test]
    fn diagnoses_per_hour_slide_with_the_hour() {
        let b = budget(2, 0);
        let t0 = Instant::now();
        assert!(b.admit(t0).is_ok() && b.admit(t0).is_ok());
        assert_eq!(b.admit(t0), Err(Exhausted::DiagnosesPerHour(2)));
        assert!(
            b.admit(t0 + HOUR).is_ok(),
            "an hour later the first two are out"
        );
    }

    #[test]
    fn tokens_per_day_count_what_was_spent() {
        let b = budget(0, 1000);
        let t0 = Instant::now();
        assert!(b.admit(t0).is_ok());
        let usage = Usage {
            input_tokens: 900,
            output_tokens: 200,
            ..Default::default()
        };
        b.spend(t0, &usage);
        let spent = b.admit(t0 + Duration::from_secs(60)).unwrap_err();
        assert_eq!(spent, Exhausted::TokensPerDay(1000));
        assert!(spent.reason().contains("Budget.TokensPerDay"));
        assert!(b.admit(t0 + DAY).is_ok());
        assert!(budget(0, 0).admit(t0).is_ok(), "0 is unlimited");
    }
}
