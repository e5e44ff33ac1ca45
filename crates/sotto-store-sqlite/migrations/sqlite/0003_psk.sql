-- DTLS pre-shared keys, one row per device identity.
--
-- The key itself must be stored: a PSK handshake needs the raw key, not a
-- hash of it. Protect the database file accordingly (docs/DTLS.md). A
-- revoked identity keeps its row for `sotto psk list`, but its key is
-- erased.
--
-- `rev` is a change counter: every add or revoke gives the row the next
-- value, so a running server picks up changes made by `sotto psk` in
-- another process by asking for rows with rev above the last it saw.
CREATE TABLE psk_identities (
    identity   TEXT PRIMARY KEY,
    psk        BLOB,                                  -- NULL once revoked
    user_id    TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL,                      -- unix milliseconds
    revoked_at INTEGER,
    rev        INTEGER NOT NULL
);
CREATE INDEX psk_identities_by_rev ON psk_identities(rev);
