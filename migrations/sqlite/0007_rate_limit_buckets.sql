-- SQLite serves one instance, whose request-rate buckets stay in process memory: PostgreSQL's
-- `rate_limit_buckets` has no counterpart here. The step exists so that both engines keep the same
-- versions.
SELECT 1;
