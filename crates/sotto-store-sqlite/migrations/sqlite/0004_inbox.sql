-- Every user's inbox: the ordered log of what their sessions must see
-- (messages to them, copies of what they sent, receipts), read from a
-- position and confirmed up to one. See sotto-core's ports/messages.rs.
--
-- `inboxes` has one narrow row per user: `head` is the last position
-- handed out, `confirmed` the highest a session confirmed, `pending` how
-- many messages to the user wait for a confirmation (the offline cap). They
-- change only inside the write that changes the inbox, so positions are
-- assigned by the database, in commit order, even with several writers.
-- Not columns of `users`: every message updates two of these rows, and
-- `users` rows are wide (hashes, public keys), so the same updates there
-- would dirty many more pages.
CREATE TABLE inboxes (
    user_id   TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    head      INTEGER NOT NULL DEFAULT 0,
    confirmed INTEGER NOT NULL DEFAULT 0,
    pending   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO inboxes (user_id) SELECT id FROM users;
CREATE TRIGGER users_get_an_inbox AFTER INSERT ON users
BEGIN
    INSERT INTO inboxes (user_id) VALUES (NEW.id);
END;

-- The last id of each conversation, so ids are never reused (MAX(seq)+1
-- reused the id of a message that retention had deleted) and are handed
-- out by a row update that serializes concurrent writers.
CREATE TABLE conversations (
    key  TEXT PRIMARY KEY,
    head INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO conversations (key, head)
SELECT conversation, MAX(seq) FROM messages GROUP BY conversation;

-- A resend is recognised by (sender, recipient, client_id): the same
-- client_id towards someone else is a different message.
--
-- Few indexes, on purpose: every one is written for every message. Retention
-- (rare) scans instead of keeping time indexes up to date on the hot path.
CREATE TABLE messages_v2 (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    sender       TEXT NOT NULL,
    recipient    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    body         TEXT NOT NULL,
    client_id    TEXT,
    sent_at      INTEGER NOT NULL,
    delivered_at INTEGER,
    read_at      INTEGER,
    UNIQUE (conversation, seq)
);
INSERT INTO messages_v2 (id, conversation, seq, sender, recipient, body, client_id, sent_at, delivered_at, read_at)
SELECT id, conversation, seq, sender, recipient, body, client_id, sent_at, delivered_at, read_at FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v2 RENAME TO messages;
CREATE UNIQUE INDEX messages_resends ON messages(sender, recipient, client_id)
    WHERE client_id IS NOT NULL;

-- kind: 0 a message to the user, 3 the user's own copy of a message they
-- sent (`message` for both; an entry whose message retention deleted is
-- skipped), 1 a delivered receipt (`peer` confirmed the user's messages up
-- to id `up_to`), 2 a read receipt (`peer` read up to id `up_to`).
CREATE TABLE inbox (
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    pos        INTEGER NOT NULL,
    kind       INTEGER NOT NULL,
    message    INTEGER,
    peer       TEXT,
    up_to      INTEGER,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, pos)
) WITHOUT ROWID;

-- What was waiting enters its recipient's inbox, oldest first.
INSERT INTO inbox (user_id, pos, kind, message, created_at)
SELECT recipient, ROW_NUMBER() OVER (PARTITION BY recipient ORDER BY id), 0, id, sent_at
FROM messages WHERE delivered_at IS NULL;
UPDATE inboxes SET
    head = (SELECT COUNT(*) FROM inbox WHERE inbox.user_id = inboxes.user_id),
    pending = (SELECT COUNT(*) FROM messages WHERE recipient = inboxes.user_id AND delivered_at IS NULL);
