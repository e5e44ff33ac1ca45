-- End-to-end devices: each browser's public key, registered under the login
-- session it runs in (sotto-core's ports/devices.rs). A key is unique per
-- user: a browser that logs in again finds its device by key. That unique
-- index also serves "the devices of a user".
CREATE TABLE devices (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    public_key TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL,              -- unix milliseconds
    UNIQUE (user_id, public_key)
);

-- The device a session is bound to. Deleting a device deletes its sessions
-- explicitly (their sockets must be closed); SET NULL is only the backstop.
ALTER TABLE sessions ADD COLUMN device_id TEXT REFERENCES devices(id) ON DELETE SET NULL;
CREATE INDEX sessions_by_device ON sessions(device_id) WHERE device_id IS NOT NULL;

-- Each user's conversation partners, for the contact list, in both
-- directions. Filled when a conversation gets its first message (the
-- trigger fires on the insert of its `conversations` row, not on the
-- head updates of every later message), so the write path of a message
-- pays nothing for it. Ids hold no ':' (they are alphanumeric).
CREATE TABLE peers (
    user_id      TEXT NOT NULL,
    peer         TEXT NOT NULL,
    conversation TEXT NOT NULL,
    PRIMARY KEY (user_id, peer)
) WITHOUT ROWID;

CREATE TRIGGER conversations_name_their_peers AFTER INSERT ON conversations
BEGIN
    INSERT OR IGNORE INTO peers (user_id, peer, conversation) VALUES
        (substr(NEW.key, 1, instr(NEW.key, ':') - 1), substr(NEW.key, instr(NEW.key, ':') + 1), NEW.key),
        (substr(NEW.key, instr(NEW.key, ':') + 1), substr(NEW.key, 1, instr(NEW.key, ':') - 1), NEW.key);
END;

INSERT OR IGNORE INTO peers (user_id, peer, conversation)
SELECT substr(key, 1, instr(key, ':') - 1), substr(key, instr(key, ':') + 1), key FROM conversations
UNION ALL
SELECT substr(key, instr(key, ':') + 1), substr(key, 1, instr(key, ':') - 1), key FROM conversations;
