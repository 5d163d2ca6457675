//! What the black-box suites of both SDK generations share besides the server: polling with a deadline
//! and the per-backend test declarations. Free of the SDK, so that `sdk-0.17/` includes it too.

use std::time::Duration;

/// Calls `attempt` until it returns `Ok`, at most until `deadline` has passed; panics with `what` and
/// the last error otherwise. For conditions that settle over time (DHT propagation), never a blind sleep.
pub async fn eventually<T, E, F, Fut>(what: &str, deadline: Duration, mut attempt: F) -> T
where
    E: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = tokio::time::Instant::now();
    loop {
        let error = match attempt().await {
            Ok(value) => return value,
            Err(error) => error,
        };
        if start.elapsed() > deadline {
            panic!("{what}: not within {deadline:?}; last error: {error:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Declares one test per backend pair that matters most (the embedded default, sqlite+fs, and the
/// production pair, postgres+s3), each running `suite(Metadata, Blobs)` within four minutes.
#[macro_export]
macro_rules! on_main_backend_pairs {
    ($suite:ident: $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn $sqlite() {
            let run = $suite($crate::Metadata::Sqlite, $crate::Blobs::Fs);
            tokio::time::timeout(std::time::Duration::from_secs(240), run)
                .await
                .expect("within 240 s");
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn $postgres() {
            let run = $suite($crate::Metadata::Postgres, $crate::Blobs::S3);
            tokio::time::timeout(std::time::Duration::from_secs(240), run)
                .await
                .expect("within 240 s");
        }
    };
}
