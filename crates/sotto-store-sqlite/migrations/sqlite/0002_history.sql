-- Conversation history for sotto's own protocol, and the one queue of
-- messages waiting for offline users (both protocols).
--
-- `conversation` is the two user ids sorted and joined by ':', so both
-- directions of a chat share one sequence; `seq` is the per-conversation
-- message id clients see. `(sender, client_id)` is unique so a resent
-- `send` is recognised instead of stored twice.
CREATE TABLE messages (
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
    UNIQUE (conversation, seq),
    UNIQUE (sender, client_id)
);
CREATE INDEX messages_undelivered ON messages(recipient, id) WHERE delivered_at IS NULL;
CREATE INDEX messages_by_time ON messages(sent_at);

-- Compat offline messages move into the shared queue.
INSERT INTO messages (conversation, seq, sender, recipient, body, sent_at)
SELECT
    CASE WHEN sender < recipient THEN sender || ':' || recipient ELSE recipient || ':' || sender END,
    ROW_NUMBER() OVER (
        PARTITION BY CASE WHEN sender < recipient THEN sender || ':' || recipient ELSE recipient || ':' || sender END
        ORDER BY id),
    sender, recipient, body, created_at
FROM undelivered ORDER BY id;
DROP TABLE undelivered;

-- Which kind of login made a session: a compat login revokes only the
-- user's other compat sessions, never their browser sessions.
ALTER TABLE sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'compat';
