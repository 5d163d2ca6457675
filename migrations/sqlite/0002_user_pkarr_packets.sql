-- The latest valid signed PKARR packet seen for each user, so that the user keys republisher can put a
-- record back on the DHT after the DHT has forgotten it.
ALTER TABLE users ADD COLUMN pkarr_packet BLOB;
