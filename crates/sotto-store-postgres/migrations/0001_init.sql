-- The whole schema of the PostgreSQL store: the same tables as the SQLite
-- store after its 0004 migration (see crates/sotto-store-sqlite/migrations),
-- so both backends behave alike. Times are unix milliseconds (BIGINT).
--
-- Text that users choose freely (message bodies, client ids, public keys)
-- is BYTEA holding its UTF-8: PostgreSQL's TEXT cannot hold a NUL
-- character, which JSON ("\u0000") and SQLite can, so as TEXT one hostile
-- message would fail the whole batch it was committed with. Names and ids
-- are validated before they get here and stay TEXT.
--
-- Identifiers and keys use the "C" collation: comparisons are bytewise, as
-- in SQLite, so `list_users` orders alike on both, and the lock order of
-- inbox rows (see src/writer.rs) is the same on every node whatever the
-- database's default locale.

-- Accounts. `name_key` is the ASCII-lowercased name: uniqueness and login
-- look-ups are case-insensitive, while `name` keeps the user's spelling.
CREATE TABLE users (
    id            TEXT COLLATE "C" NOT NULL,
    name          TEXT NOT NULL,
    name_key      TEXT COLLATE "C" NOT NULL,
    password_hash TEXT NOT NULL,          -- Argon2id PHC string, never the secret
    public_key    BYTEA NOT NULL DEFAULT '',   -- UTF-8
    created_at    BIGINT NOT NULL,
    -- Named, because the store tells a colliding id (`users_pkey`) from a
    -- taken name by the constraint a unique violation names.
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_name_key UNIQUE (name_key)
);

-- Sessions are keyed by the SHA-256 of the token, never the token. `kind`
-- is `compat` or `api`: a compat login revokes only compat sessions.
CREATE TABLE sessions (
    token_hash   BYTEA PRIMARY KEY,
    user_id      TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions(user_id);
CREATE INDEX sessions_by_last_used ON sessions(last_used_at);

-- One narrow counter row per user: `head` is the last inbox position
-- handed out, `confirmed` the highest a session confirmed, `pending` how
-- many messages to the user wait for a confirmation (the offline cap).
-- Positions are assigned by `UPDATE inboxes SET head = head + 1 ...
-- RETURNING head`: the row stays locked until the writing transaction
-- ends, so a user's positions are handed out, and become visible, in
-- commit order, whichever node writes.
CREATE TABLE inboxes (
    user_id   TEXT COLLATE "C" PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    head      BIGINT NOT NULL DEFAULT 0,
    confirmed BIGINT NOT NULL DEFAULT 0,
    pending   BIGINT NOT NULL DEFAULT 0
);

CREATE FUNCTION users_get_an_inbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inboxes (user_id) VALUES (NEW.id);
    RETURN NULL;
END;
$$;
CREATE TRIGGER users_get_an_inbox AFTER INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION users_get_an_inbox();

-- The last id of each conversation (the two user ids sorted and joined by
-- ':'), so ids are never reused after retention and are handed out by a
-- row update, like inbox positions.
CREATE TABLE conversations (
    key  TEXT COLLATE "C" PRIMARY KEY,
    head BIGINT NOT NULL
);

-- Every message. `id` is the store's own handle; `seq` the id clients see
-- within the conversation. A resend is recognised by (sender, recipient,
-- client_id). Few indexes on purpose: each is written for every message;
-- retention (rare) scans.
CREATE TABLE messages (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation TEXT COLLATE "C" NOT NULL,
    seq          BIGINT NOT NULL,
    sender       TEXT COLLATE "C" NOT NULL,
    recipient    TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    body         BYTEA NOT NULL,              -- UTF-8
    client_id    BYTEA,                       -- UTF-8
    sent_at      BIGINT NOT NULL,
    delivered_at BIGINT,
    read_at      BIGINT,
    UNIQUE (conversation, seq)
);
CREATE UNIQUE INDEX messages_resends ON messages(sender, recipient, client_id)
    WHERE client_id IS NOT NULL;

-- Every user's inbox. kind: 0 a message to the user, 3 the user's own copy
-- of a message they sent (`message` for both; an entry whose message
-- retention deleted is skipped), 1 a delivered receipt (`peer` confirmed
-- the user's messages up to id `up_to`), 2 a read receipt.
CREATE TABLE inbox (
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    pos        BIGINT NOT NULL,
    kind       INTEGER NOT NULL,
    message    BIGINT,
    peer       TEXT COLLATE "C",
    up_to      BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, pos)
);

-- DTLS pre-shared keys, one row per device identity. The key itself must
-- be stored (a PSK handshake needs it); a revoked identity keeps its row
-- with the key erased. `rev` numbers every add and revoke so running nodes
-- follow changes by asking for rows above the last rev they saw.
CREATE TABLE psk_identities (
    identity   TEXT COLLATE "C" PRIMARY KEY,
    psk        BYTEA,                                 -- NULL once revoked
    user_id    TEXT COLLATE "C" REFERENCES users(id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    rev        BIGINT NOT NULL
);
CREATE INDEX psk_identities_by_rev ON psk_identities(rev);

-- The last `rev` handed out. A counter row rather than a sequence: the
-- row stays locked until the change commits, so revs commit in order and
-- a follower reading "rev > last" never skips one that commits late (a
-- sequence hands out numbers that can commit out of order).
CREATE TABLE psk_revs (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    head     BIGINT NOT NULL
);
INSERT INTO psk_revs (only_row, head) VALUES (TRUE, 0);
