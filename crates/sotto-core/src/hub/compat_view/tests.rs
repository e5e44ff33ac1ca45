use super::*;
use crate::auth::UserName;
use crate::hub::event::LoggedIn;

fn user(n: u32) -> Arc<UserProfile> {
    Arc::new(UserProfile {
        id: UserId::parse(&format!("{n:06}")).unwrap_or_else(|| panic!("bad id {n}")),
        name: UserName::from_trusted(format!("user{n}")),
        public_key: String::new(),
    })
}

fn names(view: &mut CompatView) -> Vec<String> {
    let list = view.list();
    list.0.iter().map(|l| l.name.as_str().to_owned()).collect()
}

#[test]
fn the_list_is_the_first_arrivals_and_past_it_nothing_changes() {
    let mut v = CompatView::new(2);
    let (a, b, c, d) = (user(1), user(2), user(3), user(4));
    v.online(&a);
    v.online(&b);
    let full = v.version();
    assert_eq!(names(&mut v), ["user1", "user2"]);
    // Past the cap, comings and goings change no one's view.
    v.online(&c);
    v.online(&d);
    v.offline(&d.id);
    assert_eq!(v.version(), full);
    assert_eq!(v.online_count(), 3);
    // A listed user leaving lets the next arrival up.
    v.offline(&a.id);
    assert!(v.version() > full);
    assert_eq!(names(&mut v), ["user2", "user3"]);
    v.offline(&b.id);
    v.offline(&c.id);
    assert!(names(&mut v).is_empty());
    v.online(&a);
    assert_eq!(names(&mut v), ["user1"]);
}

#[test]
fn key_changes_count_only_for_listed_users() {
    let mut v = CompatView::new(1);
    let (a, b) = (user(1), user(2));
    v.online(&a);
    v.online(&b);
    let before = v.version();
    let mut b2 = (*b).clone();
    b2.public_key = "new".into();
    v.changed(&Arc::new(b2));
    assert_eq!(v.version(), before);
    let mut a2 = (*a).clone();
    a2.public_key = "new".into();
    v.online(&Arc::new(a2));
    assert_eq!(v.version(), before + 1);
    assert_eq!(v.list().0[0].public_key, "new");
    // The same profile again is no change.
    let same = v.list().0[0].profile.clone();
    v.changed(&same);
    assert_eq!(v.version(), before + 1);
}

#[test]
fn a_login_answer_leads_with_its_user_within_the_cap() {
    let mut v = CompatView::new(2);
    let (a, b, c) = (user(1), user(2), user(3));
    v.online(&a);
    v.online(&b);
    let answer = |v: &mut CompatView, first: &Arc<UserProfile>| {
        let (list, version, max) = v.for_login();
        let answer = LoggedIn {
            token: crate::auth::Token::generate(),
            name: first.name.as_str().to_owned(),
            first: first.clone(),
            list,
            max,
        };
        (answer, version)
    };
    let (login, version) = answer(&mut v, &c);
    let ids: Vec<&str> = login.users().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["000003", "000001"]);
    assert_eq!(login.first_in_list(), None);
    assert_eq!(version, v.version());
    let (login, _) = answer(&mut v, &b);
    let ids: Vec<&str> = login.users().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["000002", "000001"]);
    assert_eq!(login.first_in_list(), Some(1));
    // The shared list is built once per version, and answers share it.
    assert!(Arc::ptr_eq(&v.list(), &v.list()));
    assert!(Arc::ptr_eq(&login.list, &v.list()));
}
