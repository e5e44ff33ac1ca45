-- Accounts. `name_key` is the ASCII-lowercased name: uniqueness and login
-- look-ups are case-insensitive, as in QMessageServer, while `name` keeps the
-- spelling the user registered with.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    name_key      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,          -- Argon2id PHC string, never the secret
    public_key    TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL        -- unix milliseconds
);

-- Sessions are keyed by the SHA-256 of the token: the token itself is never
-- stored, so a copy of this file cannot be replayed as live sessions.
CREATE TABLE sessions (
    token_hash   BLOB PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL
);
CREATE INDEX sessions_by_user ON sessions(user_id);
CREATE INDEX sessions_by_last_used ON sessions(last_used_at);

-- Messages for users who were offline, delivered in `id` order and deleted
-- once handed to the recipient's connection.
CREATE TABLE undelivered (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sender     TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX undelivered_by_recipient ON undelivered(recipient, id);
