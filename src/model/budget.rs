//! The AI budgets' ledger: AI diagnoses and tokens counted by the minute, for
//! `Budget.DiagnosesPerHour` (the current minute and the 59 before it) and
//! `Budget.TokensPerDay` (the last 1,440 minutes). The store keeps one ledger shared by
//! every instance and applies these rules to it atomically.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Minutes in the diagnoses window.
const HOUR: i64 = 60;
/// Minutes in the tokens window.
const DAY: i64 = 24 * 60;

/// The caps (`Budget.*`; 0: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    /// AI diagnoses in any hour.
    pub diagnoses_per_hour: u64,
    /// AI tokens in any 24 hours.
    pub tokens_per_day: u64,
}

impl Caps {
    /// Whether there is any cap at all.
    pub fn any(self) -> bool {
        self.diagnoses_per_hour > 0 || self.tokens_per_day > 0
    }
}

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

/// What one minute counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Minute {
    /// Unix minute.
    m: i64,
    /// AI diagnoses admitted.
    d: u64,
    /// Tokens spent.
    t: u64,
}

/// The ledger: at most a day of minutes that counted something, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetLedger {
    minutes: Vec<Minute>,
}

fn minute(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(60)
}

impl BudgetLedger {
    /// Forgets minutes no window still counts.
    fn prune(&mut self, now: i64) {
        self.minutes.retain(|m| m.m > now - DAY);
    }

    fn current(&mut self, now: i64) -> &mut Minute {
        if self.minutes.last().is_none_or(|m| m.m != now) {
            self.minutes.push(Minute { m: now, d: 0, t: 0 });
            self.minutes.sort_by_key(|m| m.m);
        }
        self.minutes
            .iter_mut()
            .find(|m| m.m == now)
            .expect("just added")
    }

    /// Takes one AI diagnosis at `now`, or says which budget is spent (and takes nothing).
    pub fn admit(&mut self, now: DateTime<Utc>, caps: Caps) -> Result<(), Exhausted> {
        let now = minute(now);
        self.prune(now);
        let diagnoses: u64 = self
            .minutes
            .iter()
            .filter(|m| m.m > now - HOUR)
            .map(|m| m.d)
            .sum();
        if caps.diagnoses_per_hour > 0 && diagnoses >= caps.diagnoses_per_hour {
            return Err(Exhausted::DiagnosesPerHour(caps.diagnoses_per_hour));
        }
        let tokens: u64 = self.minutes.iter().map(|m| m.t).sum();
        if caps.tokens_per_day > 0 && tokens >= caps.tokens_per_day {
            return Err(Exhausted::TokensPerDay(caps.tokens_per_day));
        }
        self.current(now).d += 1;
        Ok(())
    }

    /// Records tokens a diagnosis spent at `now`.
    pub fn spend(&mut self, now: DateTime<Utc>, tokens: u64) {
        let now = minute(now);
        self.prune(now);
        if tokens > 0 {
            self.current(now).t += tokens;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn caps(diagnoses_per_hour: u64, tokens_per_day: u64) -> Caps {
        Caps {
            diagnoses_per_hour,
            tokens_per_day,
        }
    }

    #[test]
    fn diagnoses_per_hour_slide_with_the_hour() {
        let mut ledger = BudgetLedger::default();
        let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 30).unwrap();
        assert!(ledger.admit(t0, caps(2, 0)).is_ok());
        assert!(ledger.admit(t0, caps(2, 0)).is_ok());
        assert_eq!(
            ledger.admit(t0 + Duration::minutes(59), caps(2, 0)),
            Err(Exhausted::DiagnosesPerHour(2))
        );
        assert!(
            ledger.admit(t0 + Duration::minutes(60), caps(2, 0)).is_ok(),
            "an hour later the first two are out"
        );
    }

    #[test]
    fn tokens_per_day_count_what_was_spent_and_a_day_of_minutes_is_kept() {
        let mut ledger = BudgetLedger::default();
        let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        assert!(ledger.admit(t0, caps(0, 1000)).is_ok());
        ledger.spend(t0, 1100);
        let spent = ledger
            .admit(t0 + Duration::minutes(1), caps(0, 1000))
            .unwrap_err();
        assert_eq!(spent, Exhausted::TokensPerDay(1000));
        assert!(spent.reason().contains("Budget.TokensPerDay"));
        assert!(ledger.admit(t0 + Duration::days(1), caps(0, 1000)).is_ok());
        for n in 0..3000 {
            ledger.spend(t0 + Duration::minutes(n), 1);
        }
        assert!(
            ledger.minutes.len() <= DAY as usize,
            "{}",
            ledger.minutes.len()
        );
        assert!(ledger.admit(t0, caps(0, 0)).is_ok(), "0 is unlimited");
    }
}
