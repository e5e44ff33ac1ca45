//! The announcements as bytes: one line of space-separated words, the
//! node id and a kind first. Every word is ASCII without spaces (ids and
//! names are by construction; a public key is hex-encoded), so the format
//! needs no escaping and any implementation of the port can use it.
//!
//! What arrives is from the network: [`decode`] refuses anything that is
//! not exactly what [`encode`] makes, and the caller bounds its size.

use super::{Announcement, Envelope};
use crate::auth::{TokenHash, UserId, UserName};
use crate::ports::UserProfile;
use std::sync::Arc;

/// The first word of every message: a future format changes it, and a
/// node of another version ignores what it cannot read.
const VERSION: &str = "s1";

/// Encodes an envelope.
pub fn encode(e: &Envelope) -> Vec<u8> {
    let mut words: Vec<String> = vec![VERSION.into(), format!("{:016x}", e.node)];
    let (kind, rest) = fields(&e.announcement);
    words.push(kind.into());
    words.extend(rest);
    words.join(" ").into_bytes()
}

/// The subject suffix (and first word) naming an announcement's kind.
pub fn kind(a: &Announcement) -> &'static str {
    fields(a).0
}

fn fields(a: &Announcement) -> (&'static str, Vec<String>) {
    match a {
        Announcement::Inbox { user, up_to } => ("inbox", vec![user.to_string(), up_to.to_string()]),
        Announcement::Online { users } => {
            ("online", users.iter().flat_map(|p| profile(p)).collect())
        }
        Announcement::Offline { users } => {
            ("offline", users.iter().map(|u| u.to_string()).collect())
        }
        Announcement::Snapshot { part, last, users } => {
            let head = [part.to_string(), u8::from(*last).to_string()];
            let profiles = users.iter().flat_map(|p| profile(p));
            ("snapshot", head.into_iter().chain(profiles).collect())
        }
        Announcement::Alive { users, digest } => {
            ("alive", vec![users.to_string(), format!("{digest:016x}")])
        }
        Announcement::Hello { to } => ("hello", to.iter().map(|n| format!("{n:016x}")).collect()),
        Announcement::Revoked { session } => ("revoked", vec![hex::encode(session.as_bytes())]),
        Announcement::KeyChanged { profile: p } => ("key", profile(p).to_vec()),
        Announcement::DevicesChanged { user } => ("devices", vec![user.to_string()]),
        Announcement::CloseCompat { user } => ("compat", vec![user.to_string()]),
    }
}

/// A profile as three words; the key gets a `k` so an empty one is
/// still a word.
fn profile(p: &UserProfile) -> [String; 3] {
    [
        p.id.to_string(),
        p.name.to_string(),
        format!("k{}", hex::encode(p.public_key.as_bytes())),
    ]
}

/// Decodes what [`encode`] made; None for anything else.
pub fn decode(bytes: &[u8]) -> Option<Envelope> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut words = text.split(' ');
    if words.next()? != VERSION {
        return None;
    }
    let node = hex_u64(words.next()?)?;
    let kind = words.next()?;
    let rest: Vec<&str> = words.collect();
    let announcement = match (kind, rest.as_slice()) {
        ("inbox", [user, pos]) => Announcement::Inbox {
            user: UserId::parse(user)?,
            up_to: pos.parse().ok()?,
        },
        ("online", words) if words.len() % 3 == 0 => Announcement::Online {
            users: words.chunks(3).map(read_profile).collect::<Option<_>>()?,
        },
        ("offline", words) => Announcement::Offline {
            users: words
                .iter()
                .map(|u| UserId::parse(u))
                .collect::<Option<_>>()?,
        },
        ("alive", [n, digest]) => Announcement::Alive {
            users: n.parse().ok()?,
            digest: hex_u64(digest)?,
        },
        ("snapshot", [part, last, words @ ..]) if words.len() % 3 == 0 => Announcement::Snapshot {
            part: part.parse().ok()?,
            last: match *last {
                "0" => false,
                "1" => true,
                _ => return None,
            },
            users: words.chunks(3).map(read_profile).collect::<Option<_>>()?,
        },
        ("hello", []) => Announcement::Hello { to: None },
        ("hello", [to]) => Announcement::Hello {
            to: Some(hex_u64(to)?),
        },
        ("revoked", [h]) => Announcement::Revoked {
            session: TokenHash::from_slice(&hex::decode(h).ok()?)?,
        },
        ("key", words @ [_, _, _]) => Announcement::KeyChanged {
            profile: read_profile(words)?,
        },
        ("devices", [user]) => Announcement::DevicesChanged {
            user: UserId::parse(user)?,
        },
        ("compat", [user]) => Announcement::CloseCompat {
            user: UserId::parse(user)?,
        },
        _ => return None,
    };
    Some(Envelope { node, announcement })
}

fn hex_u64(word: &str) -> Option<u64> {
    (word.len() == 16).then_some(())?;
    u64::from_str_radix(word, 16).ok()
}

fn read_profile(words: &[&str]) -> Option<Arc<UserProfile>> {
    let [id, name, key] = words else { return None };
    let key = hex::decode(key.strip_prefix('k')?).ok()?;
    Some(Arc::new(UserProfile {
        id: UserId::parse(id)?,
        name: UserName::parse(name).ok()?,
        public_key: String::from_utf8(key).ok()?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(key: &str) -> Arc<UserProfile> {
        Arc::new(UserProfile {
            id: UserId::parse("alice1").unwrap(),
            name: UserName::parse("Alice").unwrap(),
            public_key: key.into(),
        })
    }

    #[test]
    fn every_kind_survives_the_round_trip() {
        let user = UserId::parse("bob123").unwrap();
        let all = [
            Announcement::Inbox {
                user: user.clone(),
                up_to: 42,
            },
            Announcement::Online {
                users: vec![alice("a key with spaces\n"), alice("")],
            },
            Announcement::Online { users: vec![] },
            Announcement::Offline {
                users: vec![user.clone()],
            },
            Announcement::Alive {
                users: 7,
                digest: u64::MAX,
            },
            Announcement::Snapshot {
                part: 3,
                last: true,
                users: vec![alice("x")],
            },
            Announcement::Snapshot {
                part: 0,
                last: false,
                users: vec![],
            },
            Announcement::Hello { to: None },
            Announcement::Hello { to: Some(3) },
            Announcement::Revoked {
                session: TokenHash([9; 32]),
            },
            Announcement::KeyChanged {
                profile: alice("k"),
            },
            Announcement::DevicesChanged { user: user.clone() },
            Announcement::CloseCompat { user },
        ];
        for announcement in all {
            let e = Envelope {
                node: u64::MAX - 5,
                announcement,
            };
            assert_eq!(decode(&encode(&e)), Some(e));
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "s1",
            "s2 0000000000000001 alive 1",
            "s1 1 alive 1",
            "s1 0000000000000001 alive",
            "s1 0000000000000001 alive 1 2",
            "s1 0000000000000001 alive 1",
            "s1 0000000000000001 snapshot 0 2",
            "s1 0000000000000001 snapshot 0",
            "s1 0000000000000001 inbox bad! 1",
            "s1 0000000000000001 online alice1 Alice",
            "s1 0000000000000001 online alice1 Alice zz",
            "s1 0000000000000001 revoked 00",
            "s1 0000000000000001 nonsense",
        ] {
            assert_eq!(decode(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(decode(&[0xff, 0xfe]), None);
    }
}
