//! A fresh, empty PostgreSQL database for one test, dropped when the test ends, passed or failed,
//! so tests never see each other's data. The server is the one at `EXCHANGE_TEST_POSTGRES_URL`
//! (default `postgres://root@127.0.0.1:5432/test`); the user must be allowed to CREATE DATABASE.
//! An unreachable server fails the test with how to start one: the PostgreSQL tests never skip.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// Where test databases are created when `EXCHANGE_TEST_POSTGRES_URL` is not set.
pub const DEFAULT_SERVER: &str = "postgres://root@127.0.0.1:5432/test";

/// A database created for one test; dropped (its connections closed first) when this is dropped.
pub struct ScratchDatabase {
    server: String,
    name: String,
    /// The URL of the new database.
    pub url: String,
}

/// The test server's URL.
pub fn server_url() -> String {
    std::env::var("EXCHANGE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_SERVER.to_string())
}

/// `url` with its database name replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_end..].find('/') {
        Some(i) => &base[..authority_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl ScratchDatabase {
    /// Creates `exchange_t_<random>` on the test server. Panics with instructions when the server
    /// cannot be reached: a missing PostgreSQL is a failed test, not a skipped one.
    pub async fn create() -> ScratchDatabase {
        let server = server_url();
        let conn = match PgConnection::connect(&server).await {
            Ok(c) => c,
            Err(e) => panic!(
                "PostgreSQL is not reachable at {server}: {e}. The PostgreSQL tests need a server: start the local one with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or set EXCHANGE_TEST_POSTGRES_URL \
                 to a server whose user may CREATE DATABASE (see README, 'Testing on PostgreSQL')"
            ),
        };
        let _ = conn.close().await;
        ScratchDatabase::create_on(&server, "exchange_t").await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates `<prefix>_<random>` on the server at `server` (whose user may CREATE DATABASE), for
    /// a test or a benchmark run; dropped with the returned value.
    pub async fn create_on(server: &str, prefix: &str) -> Result<ScratchDatabase, String> {
        let mut conn = PgConnection::connect(server).await.map_err(|e| format!("PostgreSQL is not reachable at {server}: {e}"))?;
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("random bytes");
        let name = format!("{prefix}_{}", hex::encode(bytes));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("cannot create the database {name} on {server} (the user must be allowed to CREATE DATABASE): {e}"))?;
        let _ = conn.close().await;
        let url = with_database(server, &name);
        Ok(ScratchDatabase { server: server.to_string(), name, url })
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // On a thread of its own: this may run inside a runtime (a test's), which cannot block.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            rt.block_on(async move {
                let mut conn = PgConnection::connect(&server).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&mut conn).await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}: {dropped:?}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(with_database("postgres://root@127.0.0.1:5432/test", "x"), "postgres://root@127.0.0.1:5432/x");
        assert_eq!(with_database("postgres://u:p@h/test?sslmode=disable", "x"), "postgres://u:p@h/x?sslmode=disable");
        assert_eq!(with_database("postgres://h:5432", "x"), "postgres://h:5432/x");
    }
}
