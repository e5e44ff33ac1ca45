//! Who may read `/metrics`: anyone on the HTTP port by default (existing
//! scrapers keep working), only holders of `--metrics-token`, or only
//! clients of the `--metrics-listen` address (the HTTP port then says 404).

mod support;

use sotto_server::config::Secret;
use support::*;

const TOKEN: &str = "metrics-token-for-tests";

async fn scrape(url: &str, bearer: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

fn is_metrics(body: &str) -> bool {
    body.lines()
        .any(|l| l.starts_with("sotto_tcp_connections "))
}

#[tokio::test]
async fn open_on_the_http_port_by_default() {
    let s = TestServer::start().await;
    let (status, body) = scrape(&format!("{}/metrics", s.http_base()), None).await;
    assert_eq!(status, 200);
    assert!(is_metrics(&body), "{body}");
    assert_eq!(s.server.metrics_addr(), None);
}

#[tokio::test]
async fn a_token_is_required_when_set() {
    let s = TestServer::start_with(|c| c.metrics.token = Some(Secret(TOKEN.into()))).await;
    let url = format!("{}/metrics", s.http_base());
    for wrong in [None, Some("nope"), Some(&TOKEN[..TOKEN.len() - 1])] {
        let (status, body) = scrape(&url, wrong).await;
        assert_eq!(status, 401, "{wrong:?}");
        assert!(!is_metrics(&body), "{body}");
    }
    let (status, body) = scrape(&url, Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(is_metrics(&body), "{body}");
}

#[tokio::test]
async fn an_own_listener_takes_metrics_off_the_http_port() {
    let s = TestServer::start_with(|c| {
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
        c.metrics.token = Some(Secret(TOKEN.into()));
    })
    .await;
    let public = format!("{}/metrics", s.http_base());
    assert_eq!(scrape(&public, Some(TOKEN)).await.0, 404);
    let own = format!("http://{}/metrics", s.server.metrics_addr().unwrap());
    assert_eq!(
        scrape(&own, None).await.0,
        401,
        "the token applies here too"
    );
    let (status, body) = scrape(&own, Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(is_metrics(&body), "{body}");
    let other = format!("http://{}/healthz", s.server.metrics_addr().unwrap());
    assert_eq!(
        scrape(&other, None).await.0,
        404,
        "only /metrics is served there"
    );
}
