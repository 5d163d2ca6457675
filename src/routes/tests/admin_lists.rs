//! The admin listings of PROTOCOL-0.17 §19: `GET /users`, `GET /users/{pubkey}` and `GET
//! /signup_tokens`, every parameter and every refusal, and the field order of `GET /info`.

use axum::body::Body;
use homestead_backends::metadata::{NewSignupToken, Quota, UserLimits};
use http::{Method, StatusCode};
use pubky_common::crypto::Keypair;
use serde_json::Value;

use super::{Answer, TestApp, expect, request};

/// 2026-10-02T12:00:00 UTC, in microseconds.
const NOON: i64 = 1_790_942_400_000_000;

async fn get(app: &TestApp, uri: &str) -> Answer {
    let request = request(Method::GET, uri)
        .header("x-admin-password", "secret")
        .body(Body::empty())
        .unwrap();
    app.admin(request).await
}

async fn json(app: &TestApp, uri: &str) -> Value {
    let answer = get(app, uri).await;
    assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.text());
    serde_json::from_slice(&answer.body).unwrap()
}

/// The `pubky` (or `token`) of each item of a listing.
fn names(page: &Value, field: &str) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[field].as_str().unwrap().to_string())
        .collect()
}

/// The keys at `indexes`, in that order.
fn pick<const N: usize>(keys: &[String], indexes: [usize; N]) -> Vec<String> {
    indexes.iter().map(|&i| keys[i].clone()).collect()
}

/// Every page of `uri` (which has a `?`), walked through `next_cursor`.
async fn walk(app: &TestApp, uri: &str, field: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut page = json(app, uri).await;
    loop {
        all.extend(names(&page, field));
        match page["next_cursor"].as_str() {
            Some(cursor) => page = json(app, &format!("{uri}&cursor={cursor}")).await,
            None => return all,
        }
    }
}

/// Four users signed up one second apart from [`NOON`] (the first at exactly noon): the second
/// disabled, the third using the most storage, the fourth some.
async fn four_users(app: &TestApp) -> Vec<String> {
    let keys: Vec<String> = (0..4)
        .map(|_| Keypair::random().public_key().z32())
        .collect();
    let accounts = app.state.store.accounts();
    for (i, key) in keys.iter().enumerate() {
        let signed_up = NOON + i as i64 * 1_000_000 + if i == 0 { 0 } else { 123_456 };
        accounts.create_user(key, None, signed_up).await.unwrap();
    }
    accounts.set_disabled(&keys[1], true).await.unwrap();
    app.write(&keys[2], "/pub/big", "0123456789").await;
    app.write(&keys[3], "/pub/small", "0").await;
    keys
}

/// Asserts the 400 of a query string that does not parse (§19.1).
fn refused_query(answer: &Answer, query: &str) {
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
    let text = answer.text();
    assert!(
        text.starts_with("Failed to deserialize query string: "),
        "{query}: {text}"
    );
}

#[tokio::test]
async fn users_are_listed_with_the_reference_fields_in_its_order() {
    let app = TestApp::builder().build().await;
    let keys = four_users(&app).await;
    let page = get(&app, "/users?limit=1").await;
    assert_eq!(
        page.text(),
        format!(
            r#"{{"items":[{{"pubky":"{}","created_at":"2026-10-02T12:00:00","disabled":false,"used_bytes":0,"quota":{{"effective":{{"storage_quota_mb":"unlimited","rate_read":"unlimited","rate_write":"unlimited"}},"overrides":{{}}}}}}],"next_cursor":"{}"}}"#,
            keys[0], keys[0]
        )
    );
    // Fractional seconds when not zero; one user alone has the same shape as a list item.
    let one = get(&app, &format!("/users/{}", keys[1])).await;
    let one: Value = serde_json::from_slice(&one.body).unwrap();
    assert_eq!(one["created_at"], "2026-10-02T12:00:01.123456");
    assert_eq!(one["disabled"], true);
    let listed = json(&app, "/users").await;
    assert_eq!(listed["items"][1], one);
    assert_eq!(listed["next_cursor"], Value::Null, "no more users follow");
    assert_eq!(one["used_bytes"], 0);
    let big = json(&app, &format!("/users/{}", keys[2])).await;
    assert_eq!(big["used_bytes"], 10 + 256);
}

#[tokio::test]
async fn users_page_by_every_order_and_state() {
    let app = TestApp::builder().build().await;
    let keys = four_users(&app).await;
    let by_time = walk(&app, "/users?limit=1", "pubky").await;
    assert_eq!(by_time, keys);
    let mut reversed = keys.clone();
    reversed.reverse();
    assert_eq!(
        walk(&app, "/users?limit=3&reverse=true", "pubky").await,
        reversed
    );
    assert_eq!(
        walk(&app, "/users?limit=2&sort_by=used_bytes", "pubky").await,
        pick(&keys, [0, 1, 3, 2])
    );
    assert_eq!(
        walk(
            &app,
            "/users?limit=2&sort_by=used_bytes&reverse=true",
            "pubky"
        )
        .await,
        pick(&keys, [2, 3, 1, 0])
    );
    assert_eq!(
        walk(&app, "/users?sort_by=created_at&reverse=false", "pubky").await,
        keys
    );
    assert_eq!(
        walk(&app, "/users?state=disabled", "pubky").await,
        pick(&keys, [1])
    );
    assert_eq!(
        walk(&app, "/users?state=enabled&limit=1", "pubky").await,
        pick(&keys, [0, 2, 3])
    );
    assert_eq!(walk(&app, "/users?state=all", "pubky").await, keys);
    // A page that ends exactly at the last user has no cursor.
    let exact = json(&app, "/users?limit=4").await;
    assert_eq!(names(&exact, "pubky"), keys);
    assert_eq!(exact["next_cursor"], Value::Null);
    let first = json(&app, "/users?limit=3").await;
    assert_eq!(first["next_cursor"], keys[2].as_str());
}

#[tokio::test]
async fn bad_user_queries_are_refused() {
    let app = TestApp::builder().build().await;
    let keys = four_users(&app).await;
    let stranger = Keypair::random().public_key().z32();
    expect(
        &get(&app, &format!("/users?cursor={stranger}")).await,
        400,
        "Unknown cursor",
    );
    for query in [
        "limit=0",
        "limit=65536",
        "limit=-1",
        "limit=ten",
        "state=banned",
        "sort_by=name",
        "reverse=yes",
        "cursor=nokey",
    ] {
        refused_query(&get(&app, &format!("/users?{query}")).await, query);
    }
    let prefixed = get(&app, &format!("/users?cursor=pubky{}", keys[0])).await;
    expect(
        &prefixed,
        400,
        &format!(
            "Failed to deserialize query string: cursor: `pubky{}` is not a public key",
            keys[0]
        ),
    );
    // The largest limit is served, capped.
    assert_eq!(
        names(&json(&app, "/users?limit=65535").await, "pubky"),
        keys
    );

    expect(
        &get(&app, &format!("/users/{stranger}")).await,
        404,
        "Not Found",
    );
    expect(
        &get(&app, "/users/nokey").await,
        400,
        "Invalid URL: `nokey` is not a public key",
    );
    let prefixed = get(&app, &format!("/users/pubky{}", keys[0])).await;
    assert_eq!(prefixed.status, StatusCode::BAD_REQUEST);
    assert!(prefixed.text().starts_with("Invalid URL: "));
    for uri in ["/users", "/signup_tokens", &format!("/users/{}", keys[0])] {
        let anonymous = request(Method::GET, uri).body(Body::empty()).unwrap();
        expect(&app.admin(anonymous).await, 401, "Missing admin password");
    }
}

#[tokio::test]
async fn signup_tokens_are_listed_by_text_with_their_redemption_and_quota() {
    let app = TestApp::builder().build().await;
    let accounts = app.state.store.accounts();
    let limits = UserLimits {
        rate_read: Some("10mb/s".into()),
        ..UserLimits::default()
    };
    let minted = [
        ("BBBB-0000-0000", Some(Quota::Bytes(5 << 20)), limits),
        ("AAAA-0000-0000", None, UserLimits::default()),
        ("CCCC-0000-0000", None, UserLimits::default()),
    ];
    for (token, quota, limits) in &minted {
        let token = NewSignupToken {
            token,
            created_at: NOON,
            quota: *quota,
            limits,
        };
        accounts.create_signup_token(&token).await.unwrap();
    }
    let user = Keypair::random().public_key().z32();
    let redeemed = NOON + 500_000;
    accounts
        .create_user(&user, Some("CCCC-0000-0000"), redeemed)
        .await
        .unwrap();

    let page = get(&app, "/signup_tokens?limit=2").await;
    assert_eq!(
        page.text(),
        r#"{"items":[{"token":"AAAA-0000-0000","created_at":"2026-10-02T12:00:00","used_at":null,"used_by":null,"quota":{}},{"token":"BBBB-0000-0000","created_at":"2026-10-02T12:00:00","used_at":null,"used_by":null,"quota":{"storage_quota_mb":5,"rate_read":"10mb/s"}}],"next_cursor":"BBBB-0000-0000"}"#
    );
    let rest = json(&app, "/signup_tokens?limit=2&cursor=BBBB-0000-0000").await;
    assert_eq!(
        rest["items"][0],
        serde_json::json!({
            "token": "CCCC-0000-0000",
            "created_at": "2026-10-02T12:00:00",
            "used_at": "2026-10-02T12:00:00.500",
            "used_by": user,
            "quota": {},
        })
    );
    assert_eq!(rest["next_cursor"], Value::Null);
    let all = ["AAAA-0000-0000", "BBBB-0000-0000", "CCCC-0000-0000"];
    assert_eq!(walk(&app, "/signup_tokens?limit=1", "token").await, all);
    assert_eq!(walk(&app, "/signup_tokens?state=all", "token").await, all);
    assert_eq!(
        walk(&app, "/signup_tokens?state=used", "token").await,
        ["CCCC-0000-0000"]
    );
    assert_eq!(
        walk(&app, "/signup_tokens?state=unused&limit=1", "token").await,
        ["AAAA-0000-0000", "BBBB-0000-0000"]
    );
    // A cursor need not be a stored token, only a well-formed one.
    assert_eq!(
        names(
            &json(&app, "/signup_tokens?cursor=AZZZ-ZZZZ-ZZZZ").await,
            "token"
        ),
        ["BBBB-0000-0000", "CCCC-0000-0000"]
    );
    for query in [
        "cursor=AAAA",
        "cursor=pubky",
        "state=redeemed",
        "limit=0",
        "limit=x",
    ] {
        refused_query(&get(&app, &format!("/signup_tokens?{query}")).await, query);
    }
}

#[tokio::test]
async fn info_has_the_reference_fields_first_then_ours() {
    let app = TestApp::builder().build().await;
    four_users(&app).await;
    let info = json(&app, "/info").await;
    let fields: Vec<&str> = info
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "num_users",
            "num_disabled_users",
            "total_disk_used_mb",
            "num_signup_codes",
            "num_unused_signup_codes",
            "public_key",
            "pkarr_pubky_address",
            "pkarr_icann_domain",
            "version",
            "num_pop_nonces",
            "pkarr_publish",
            "user_keys_republisher",
        ]
    );
    assert_eq!(
        (
            info["num_users"].as_u64(),
            info["num_disabled_users"].as_u64()
        ),
        (Some(4), Some(1))
    );
}
