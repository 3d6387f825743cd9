//! A plaintext token never reaches the database: after creating tokens, every
//! text column of every table is scanned for it.

use crate::backend_tests;
use crate::harness::{Backend, TestApp};
use crate::store::{bootstrap, create_token};

backend_tests!(no_plaintext_token_is_stored_anywhere);

/// Every (table, column) of the schema, from the engine's own catalogue.
async fn all_columns(app: &TestApp, backend: Backend) -> Vec<(String, String)> {
    let sql = match backend {
        Backend::Sqlite => {
            "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'"
        }
        Backend::Postgres => {
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public'"
        }
    };
    sqlx::query_as(sql)
        .fetch_all(app.db().pool())
        .await
        .unwrap()
}

async fn no_plaintext_token_is_stored_anywhere(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b = bootstrap(&app, "ada@example.com").await;
    let mut plaintexts = Vec::new();
    for n in 0..3 {
        let (_, plain) = create_token(&app, b.user.id, b.organization.id, &format!("t{n}"))
            .await
            .unwrap();
        plaintexts.push(plain);
    }

    let columns = all_columns(&app, backend).await;
    assert!(
        columns
            .iter()
            .any(|(t, c)| t == "api_tokens" && c == "token_hash"),
        "{columns:?}"
    );
    let mut text_values = 0;
    for (table, column) in &columns {
        // Every column, whatever its type, read as bytes.
        let expr = match backend {
            Backend::Sqlite => format!("CAST({column} AS BLOB)"),
            Backend::Postgres => format!("convert_to(CAST({column} AS TEXT), 'UTF8')"),
        };
        let values: Vec<(Option<Vec<u8>>,)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {expr} FROM {table}")))
                .fetch_all(app.db().pool())
                .await
                .unwrap();
        for bytes in values.into_iter().filter_map(|(v,)| v) {
            let value = String::from_utf8_lossy(&bytes);
            text_values += 1;
            for plain in &plaintexts {
                let secret = plain.expose_secret();
                // Neither the whole token nor its random body, in any column.
                let body = &secret[secret.find('_').unwrap() + 1..];
                assert!(
                    !value.contains(secret) && !value.contains(body),
                    "plaintext found in {table}.{column}"
                );
            }
        }
    }
    assert!(
        text_values > 10,
        "the scan read text columns ({text_values})"
    );

    // What is stored is the SHA-256 digest.
    let (hash,): (String,) = sqlx::query_as("SELECT token_hash FROM api_tokens WHERE label = 't0'")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    assert_eq!(hash, plaintexts[0].digest().to_hex());
    app.shutdown().await;
}
