-- The AI budgets' ledger (Budget.DiagnosesPerHour, Budget.TokensPerDay), kept in the store
-- so every instance on it shares the caps and a restart keeps the windows. One row, its
-- ledger as JSON (minutes that counted something, a day at most). Applied once, when
-- PRAGMA user_version is below 9.
CREATE TABLE budget (
    id TEXT PRIMARY KEY,
    ledger TEXT NOT NULL
);
