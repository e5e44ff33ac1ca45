-- Cheaper message rows on the write path: no per-row check that the
-- user exists on the tables a batch inserts into (see src/writer.rs),
--
-- A foreign key check on an inserted row reads the referenced `users` row
-- and takes a KEY SHARE lock on it. A message batch inserts a message and
-- two to three inbox rows per message: thousands of checks per second,
-- each writing a lock into a `users` row, and when two nodes' batches
-- share-lock the same busy user at once PostgreSQL has to make a
-- multixact for it. They guard nothing the writer does not already
-- guarantee: a batch inserts messages and inbox rows only for users whose
-- `inboxes` row it holds locked (`inboxes.user_id` keeps its foreign key,
-- so those users exist), and users are never deleted (no port deletes
-- one; retention deletes messages and inbox rows, not users).
ALTER TABLE inbox DROP CONSTRAINT IF EXISTS inbox_user_id_fkey;
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_recipient_fkey;

-- Every message row is updated once when it is delivered (and again when
-- it is read). With full pages the new row version lands on another page
-- and every index of the table (three) gets a new entry; with room left on
-- the page the update is "HOT": no index is touched. Applies to pages
-- written from now on.
ALTER TABLE messages SET (fillfactor = 70);
