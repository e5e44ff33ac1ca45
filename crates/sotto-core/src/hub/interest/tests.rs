use super::*;
use crate::hub::conn::outbound;
use tokio_util::sync::CancellationToken;

fn id(s: &str) -> UserId {
    UserId::parse(s).unwrap_or_else(|| panic!("bad test id {s}"))
}

fn conn() -> Outbound {
    outbound(8, &CancellationToken::new()).0
}

fn audience_ids(i: &Interest, x: &UserId) -> Vec<ConnId> {
    let mut ids: Vec<ConnId> = i.audience(x).into_iter().map(|(_, o)| o.id()).collect();
    ids.sort_by_key(|c| c.to_string());
    ids
}

#[test]
fn contacts_and_watched_users_are_the_audience() {
    let i = Interest::default();
    let (alice, bob, carol, dave) = (id("aaaaaa"), id("bbbbbb"), id("cccccc"), id("dddddd"));
    let (a1, a2) = (conn(), conn());
    i.join(&alice, &a1, vec![bob.clone()]);
    i.join(&alice, &a2, vec![]);
    // A contact reaches every connection of the user; a stranger none.
    assert_eq!(audience_ids(&i, &bob).len(), 2);
    assert!(i.audience(&carol).is_empty());
    // A watched user reaches the watching connection only.
    assert!(i.watch(&alice, a2.id(), [carol.clone()].into()));
    assert_eq!(audience_ids(&i, &carol), [a2.id()]);
    // Watching replaces: Carol is dropped, Dave taken.
    assert!(i.watch(&alice, a2.id(), [dave.clone()].into()));
    assert!(i.audience(&carol).is_empty());
    assert_eq!(audience_ids(&i, &dave), [a2.id()]);
    let mut view = i.view_of(&alice, a2.id());
    view.sort();
    assert_eq!(view, [bob.clone(), dave.clone()]);
    assert_eq!(i.view_of(&alice, a1.id()), std::slice::from_ref(&bob));
}

#[test]
fn leaving_unlinks_what_nobody_cares_about() {
    let i = Interest::default();
    let (alice, bob, carol) = (id("aaaaaa"), id("bbbbbb"), id("cccccc"));
    let (a1, a2) = (conn(), conn());
    i.join(&alice, &a1, vec![bob.clone()]);
    i.join(&alice, &a2, vec![]);
    i.watch(&alice, a2.id(), [carol.clone(), bob.clone()].into());
    i.leave(&alice, a2.id());
    assert!(i.audience(&carol).is_empty());
    assert_eq!(audience_ids(&i, &bob), [a1.id()]);
    i.leave(&alice, a1.id());
    assert!(i.audience(&bob).is_empty());
    assert!(i.lock().watchers.is_empty() && i.lock().users.is_empty());
    // An unknown connection is a no-op, and cannot watch.
    i.leave(&alice, a1.id());
    assert!(!i.watch(&alice, a1.id(), HashSet::new()));
}

#[test]
fn befriending_adds_a_contact_once_and_stays_bounded() {
    let i = Interest::default();
    let (alice, bob) = (id("aaaaaa"), id("bbbbbb"));
    assert!(!i.befriend(&alice, &bob), "not registered here");
    let a = conn();
    i.join(&alice, &a, vec![]);
    assert!(!i.befriend(&alice, &alice));
    assert!(i.befriend(&alice, &bob));
    assert!(!i.befriend(&alice, &bob));
    assert_eq!(audience_ids(&i, &bob), [a.id()]);
    for n in 0..CONTACTS_MAX + 10 {
        i.befriend(&alice, &id(&format!("{n:06}")));
    }
    let inner = i.lock();
    assert_eq!(inner.users[&alice].contacts.len(), CONTACTS_MAX as usize);
    // The reverse index holds exactly the kept contacts.
    let linked = inner
        .watchers
        .values()
        .filter(|s| s.contains(&alice))
        .count();
    assert_eq!(linked, CONTACTS_MAX as usize);
}
