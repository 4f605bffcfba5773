//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// Path of the built `prereg-station` binary.
pub fn station_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_prereg-station"))
}

/// The `[store]` section that puts a test station on a fresh PostgreSQL
/// database when `PREREG_TEST_STORE=postgres` (scripts/test.sh runs the
/// station suite once more that way, under scripts/pg-throwaway.sh); empty
/// otherwise (SQLite, the default).
pub fn store_section() -> String {
    match std::env::var("PREREG_TEST_STORE").as_deref() {
        Ok("postgres") => {
            let admin = prereg_station::store::pg::test_server_url()
                .expect("PREREG_TEST_STORE=postgres needs scripts/pg-throwaway.sh");
            let url = prereg_station::store::pg::fresh_test_database(&admin).unwrap();
            format!("\n[store]\nurl = {url:?}\n")
        }
        Ok("sqlite") | Err(_) => String::new(),
        Ok(other) => panic!("PREREG_TEST_STORE={other}: use postgres or sqlite"),
    }
}
