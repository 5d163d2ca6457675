-- The admin listing of users (PROTOCOL-0.17 §19.1) pages by sign-up time with the id as tie-breaker:
-- keyset pages read this index from the cursor on. No index on used_bytes: every write moves it, and an
-- index there would be updated by each of them, for a rare listing that can sort the table instead.
CREATE INDEX users_created_at ON users (created_at, id);
