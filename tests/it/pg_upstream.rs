//! vigil's upstream PostgreSQL connection against a real PostgreSQL 15: each authentication
//! method, the server's own refusals, TLS modes, a query over the raw connection, and cancel.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use vigil::pg::{
    upstream::{self, AuthMethod, Upstream, UpstreamError, UpstreamSettings, UpstreamTls},
    wire::{
        backend::{Backend, TransactionStatus},
        frontend, DEFAULT_MAX_MESSAGE_LEN,
    },
    Secret,
};

use crate::pgserver::{Auth, PgServer, DATABASE, PASSWORD, USER};

fn settings(address: String, password: Option<&str>, tls: UpstreamTls) -> UpstreamSettings {
    let mut s = UpstreamSettings::new(address, DATABASE, USER, tls);
    s.password = password.map(|p| Secret::new(p.to_string()));
    s.params = vec![("application_name".into(), "vigil-test".into())];
    s
}

/// Sends a simple query over the relayed connection; returns the rows' text values and the
/// command tag.
async fn query(up: Upstream, sql: &str) -> (Vec<Vec<Option<String>>>, String) {
    let mut framed = up.into_framed(DEFAULT_MAX_MESSAGE_LEN);
    framed.send(frontend::query(sql).unwrap()).await.unwrap();
    let mut rows = Vec::new();
    let mut tag = String::new();
    loop {
        match framed.next().await.unwrap().unwrap() {
            Backend::RowDescription { .. } => {}
            Backend::DataRow(row) => rows.push(
                row.values()
                    .map(|v| v.map(|v| String::from_utf8(v.to_vec()).unwrap()))
                    .collect(),
            ),
            Backend::CommandComplete { tag: t, .. } => tag = t,
            Backend::ReadyForQuery { status, .. } => {
                assert_eq!(status, TransactionStatus::Idle);
                return (rows, tag);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn text(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[tokio::test]
async fn scram_authenticates_and_relays_a_query() {
    let pg = PgServer::start(Auth::ScramSha256, false);
    let up = upstream::connect(&settings(
        pg.address(),
        Some(PASSWORD),
        UpstreamTls::Disable,
    ))
    .await
    .unwrap();
    assert!(!up.tls);
    assert_eq!(up.auth, AuthMethod::ScramSha256);
    // Later logins take the salted password from vigil's cache; the server still checks the
    // proof (and vigil the server's signature) each time.
    for _ in 0..2 {
        let again = upstream::connect(&settings(
            pg.address(),
            Some(PASSWORD),
            UpstreamTls::Disable,
        ))
        .await
        .unwrap();
        assert_eq!(again.auth, AuthMethod::ScramSha256);
    }
    assert!(up.param("server_version").unwrap().starts_with("15"));
    assert_eq!(up.param("application_name"), Some("vigil-test"));
    assert_eq!(up.param("client_encoding"), Some("UTF8"));
    assert!(up.backend_key.is_some());
    let (rows, tag) = query(
        up,
        "SELECT n, current_user, current_database() FROM generate_series(1, 3) n",
    )
    .await;
    assert_eq!(tag, "SELECT 3");
    assert_eq!(
        rows,
        (1..=3)
            .map(|n| vec![text(&n.to_string()), text(USER), text(DATABASE)])
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn scram_refusals_carry_the_servers_message() {
    let pg = PgServer::start(Auth::ScramSha256, false);
    let e = upstream::connect(&settings(pg.address(), Some("wrong"), UpstreamTls::Disable))
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), Some("28P01"), "{e}");
    assert!(
        e.to_string().contains(&format!(
            "password authentication failed for user \"{USER}\""
        )),
        "{e}"
    );

    let e = upstream::connect(&settings(pg.address(), None, UpstreamTls::Disable))
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::NoPassword), "{e}");

    let mut s = settings(pg.address(), Some(PASSWORD), UpstreamTls::Disable);
    s.database = "nosuchdb".into();
    let e = upstream::connect(&s).await.unwrap_err();
    assert_eq!(e.sqlstate(), Some("3D000"), "{e}");
    assert!(e.to_string().contains("nosuchdb"), "{e}");
}

#[tokio::test]
async fn md5_authenticates() {
    let pg = PgServer::start(Auth::Md5, false);
    let up = upstream::connect(&settings(
        pg.address(),
        Some(PASSWORD),
        UpstreamTls::Disable,
    ))
    .await
    .unwrap();
    assert_eq!(up.auth, AuthMethod::Md5);
    let (rows, _) = query(up, "SELECT 'md5 ok'").await;
    assert_eq!(rows, [[text("md5 ok")]]);
    let e = upstream::connect(&settings(pg.address(), Some("wrong"), UpstreamTls::Disable))
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), Some("28P01"), "{e}");
}

#[tokio::test]
async fn cleartext_password_authenticates() {
    let pg = PgServer::start(Auth::Password, false);
    let up = upstream::connect(&settings(
        pg.address(),
        Some(PASSWORD),
        UpstreamTls::Disable,
    ))
    .await
    .unwrap();
    assert_eq!(up.auth, AuthMethod::Cleartext);
    let (rows, _) = query(up, "SELECT 'password ok'").await;
    assert_eq!(rows, [[text("password ok")]]);
    let e = upstream::connect(&settings(pg.address(), Some("wrong"), UpstreamTls::Disable))
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), Some("28P01"), "{e}");
}

#[tokio::test]
async fn trust_needs_no_password_and_cancel_stops_a_query() {
    let pg = PgServer::start(Auth::Trust, false);
    let s = settings(pg.address(), None, UpstreamTls::Disable);
    let up = upstream::connect(&s).await.unwrap();
    assert_eq!(up.auth, AuthMethod::None);
    let key = up.backend_key.unwrap();
    let mut framed = up.into_framed(DEFAULT_MAX_MESSAGE_LEN);
    framed
        .send(frontend::query("SELECT pg_sleep(60)").unwrap())
        .await
        .unwrap();
    // The server ignores a cancel that arrives before the query runs: it is sent again until
    // the answer comes.
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let mut resend = tokio::time::interval(Duration::from_millis(300));
        resend.tick().await;
        loop {
            let m = tokio::select! {
                m = framed.next() => m,
                _ = resend.tick() => {
                    upstream::cancel(&s, key).await.unwrap();
                    continue;
                }
            };
            match m.unwrap().unwrap() {
                Backend::ErrorResponse { fields, .. } => return fields,
                Backend::RowDescription { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("the cancel reached the server");
    assert_eq!(answer.code(), "57014", "{answer}");
}

#[tokio::test]
async fn tls_require_and_verify_full() {
    let pg = PgServer::start(Auth::ScramSha256, true);
    let ca = pg.ca_file.clone().unwrap();

    // hostssl: the server refuses plain connections.
    let e = upstream::connect(&settings(
        pg.address(),
        Some(PASSWORD),
        UpstreamTls::Disable,
    ))
    .await
    .unwrap_err();
    assert_eq!(e.sqlstate(), Some("28000"), "{e}");

    let up = upstream::connect(&settings(
        pg.address(),
        Some(PASSWORD),
        UpstreamTls::Require,
    ))
    .await
    .unwrap();
    assert!(up.tls);
    assert_eq!(up.auth, AuthMethod::ScramSha256);
    let (rows, _) = query(
        up,
        "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    assert_eq!(rows, [[text("true")]]);

    let verify = UpstreamTls::VerifyFull {
        ca_file: Some(ca.clone()),
    };
    for address in [
        format!("localhost:{}", pg.port),
        format!("127.0.0.1:{}", pg.port),
    ] {
        let up = upstream::connect(&settings(address.clone(), Some(PASSWORD), verify.clone()))
            .await
            .unwrap_or_else(|e| panic!("{address}: {e}"));
        assert!(up.tls);
        let (rows, _) = query(up, "SELECT 'verified'").await;
        assert_eq!(rows, [[text("verified")]]);
    }

    // A CA that did not sign the server's certificate.
    let wrong_ca = pg.dir.path().join("server.crt");
    let e = upstream::connect(&settings(
        pg.address(),
        Some(PASSWORD),
        UpstreamTls::VerifyFull {
            ca_file: Some(wrong_ca),
        },
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, UpstreamError::Tls { .. }), "{e}");

    // Cancel works over TLS too (nothing to cancel: the server just closes).
    let up = upstream::connect(&settings(pg.address(), Some(PASSWORD), verify.clone()))
        .await
        .unwrap();
    let s = settings(pg.address(), Some(PASSWORD), verify);
    upstream::cancel(&s, up.backend_key.unwrap()).await.unwrap();
}

#[tokio::test]
async fn tls_required_but_the_server_has_none() {
    let pg = PgServer::start(Auth::ScramSha256, false);
    for tls in [
        UpstreamTls::Require,
        UpstreamTls::VerifyFull {
            ca_file: Some(pg.dir.path().join("data/postgresql.conf")),
        },
    ] {
        let e = upstream::connect(&settings(pg.address(), Some(PASSWORD), tls.clone()))
            .await
            .unwrap_err();
        match tls {
            UpstreamTls::Require => {
                assert!(matches!(e, UpstreamError::TlsRefused { .. }), "{e}");
                assert!(e.to_string().contains("does not accept TLS"), "{e}");
            }
            // A CA file without certificates is refused before connecting.
            _ => assert!(matches!(e, UpstreamError::NoCertificates { .. }), "{e}"),
        }
    }
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts TCP and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let _held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let mut s = settings(address, Some(PASSWORD), UpstreamTls::Require);
    s.connect_timeout = Duration::from_millis(300);
    let e = upstream::connect(&s).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Timeout { .. }), "{e}");
}
