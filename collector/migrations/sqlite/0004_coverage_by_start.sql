-- `check` asks when observation began (the earliest coverage start): an index, not a
-- scan of every instance's intervals.
CREATE INDEX IF NOT EXISTS coverage_by_start ON coverage (start);
