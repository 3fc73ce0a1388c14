//! Regressions found by the database-fault soak (scripts/soak.sh dbfault):
//! PostgreSQL stopped in the middle of a mixed load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway::error::Error;

/// Found by the soak: a stop in the middle of a transaction ends the
/// connection with SQLSTATE 57P01 (admin_shutdown), which was mapped to 500.
/// A server ending our connection is the database being unavailable: 503.
#[test]
fn a_connection_the_server_ends_is_unavailable_not_internal() {
    let db = TestDb::create();
    let err = db.with(|c| {
        c.batch_execute("SELECT pg_terminate_backend(pg_backend_pid())")
            .expect_err("the backend ends itself")
    });
    // The client reads either the FATAL 57P01 the backend sends before it
    // exits or, when the socket closes first, a plain `Closed`: a race in
    // the driver, seen in CI. Both are the server ending the connection.
    let code = err.code().map(|c| c.code().to_owned());
    assert!(
        code.as_deref() == Some("57P01") || err.is_closed(),
        "expected 57P01 or a closed connection, got {err:?}"
    );
    assert!(
        matches!(Error::from(err), Error::Unavailable(_)),
        "57P01 must map to Unavailable (503)"
    );
    // The next statement on the dead connection fails too; still 503.
    let err = db.with(|c| {
        let _ = c.batch_execute("SELECT pg_terminate_backend(pg_backend_pid())");
        c.batch_execute("SELECT 1").expect_err("connection is gone")
    });
    assert!(matches!(Error::from(err), Error::Unavailable(_)));
}
