//! A fresh PostgreSQL database per test on the server at `SIGNAL_BUS_POSTGRES_URL`
//! (`signal_bus_test_<random>`), dropped at the end (or on drop when a test fails). `None`,
//! with a printed note, when the variable is unset: the test is skipped.

#![allow(dead_code)]

use sqlx::{postgres::PgConnectOptions, ConnectOptions, Connection, Executor, PgConnection};

/// A fresh database on the shared server.
pub struct TestDb {
    base: String,
    name: String,
    /// Its URL.
    pub url: String,
    dropped: bool,
}

impl TestDb {
    /// Creates the database; `None` (with a note) when `SIGNAL_BUS_POSTGRES_URL` is unset.
    pub async fn new(test: &str) -> Option<TestDb> {
        let Ok(base) = std::env::var("SIGNAL_BUS_POSTGRES_URL") else {
            eprintln!("SIGNAL_BUS_POSTGRES_URL is not set: PostgreSQL test `{test}` skipped");
            return None;
        };
        let mut admin = PgConnection::connect(&base).await.unwrap_or_else(|e| {
            panic!("PostgreSQL must be reachable at SIGNAL_BUS_POSTGRES_URL ({base}): {e}")
        });
        let name = format!("signal_bus_test_{}", uuid::Uuid::now_v7().simple());
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create the test database");
        let options: PgConnectOptions = base.parse().expect("parse SIGNAL_BUS_POSTGRES_URL");
        let url = options.database(&name).to_url_lossy().to_string();
        Some(TestDb {
            base,
            name,
            url,
            dropped: false,
        })
    }

    /// Drops the database (closing every connection to it).
    pub async fn drop_db(mut self) {
        drop_database(&self.base, &self.name)
            .await
            .expect("drop the test database");
        self.dropped = true;
    }
}

impl Drop for TestDb {
    /// A failed test still drops its database (on a thread of its own: no async drop).
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (base, name) = (self.base.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let _ = runtime.block_on(drop_database(&base, &name));
        })
        .join();
    }
}

async fn drop_database(base: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut admin = PgConnection::connect(base).await?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await?;
    Ok(())
}
