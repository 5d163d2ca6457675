-- Per-user settings beyond the storage quota (OPERATIONS.md §5.4: rates, bursts, allowed write paths) as
-- JSON, and the settings a signup token hands to the user who redeems it.
ALTER TABLE users ADD COLUMN limits TEXT;
ALTER TABLE signup_tokens ADD COLUMN quota_bytes INTEGER;
ALTER TABLE signup_tokens ADD COLUMN limits TEXT;
