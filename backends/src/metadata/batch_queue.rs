//! The queue behind each group commit: requests queued while a batch runs are handled together by the
//! next one, as many as are waiting (up to the batch's most), so that one statement or transaction,
//! and one flush of the database's log, serves them all. What a batch does is the user's ([`Batch`]):
//! the file writes (`group_commit`) and the PoP nonce checks (`pop_nonces`).

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::{Result, query};

/// A kind of request a group commit handles.
pub(crate) trait Request: Send + Sync + 'static {
    /// The answer to one request.
    type Answer: Send + 'static;
    /// Most requests in one batch.
    const MAX_BATCH: usize;
    /// Queuing a request, as errors name it.
    const QUEUE_OPERATION: &'static str;
    /// Running a batch, as errors name it.
    const OPERATION: &'static str;
}

/// What a group commit does with a batch of requests.
#[async_trait]
pub(crate) trait Batch<R: Request>: Send + Sync + 'static {
    /// One answer per request of `batch`, in order; an error fails every request of the batch.
    async fn run(&self, batch: &[R]) -> Result<Vec<Result<R::Answer>>>;
}

/// A request waiting in a queue, and where its answer goes.
#[derive(Debug)]
pub(crate) struct Waiting<R: Request> {
    request: R,
    reply: oneshot::Sender<Result<R::Answer>>,
}

/// The sender that requests are queued on.
pub(crate) type Queue<R> = mpsc::Sender<Waiting<R>>;

/// Starts the group commit of `batch`; requests are queued on the returned sender.
pub(crate) fn start<R: Request>(batch: impl Batch<R>) -> Queue<R> {
    let (sender, receiver) = mpsc::channel(R::MAX_BATCH * 4);
    tokio::spawn(run(batch, receiver));
    sender
}

/// Queues `request` and waits for its answer.
pub(crate) async fn submit<R: Request>(queue: &Queue<R>, request: R) -> Result<R::Answer> {
    let (reply, answer) = oneshot::channel();
    if queue.send(Waiting { request, reply }).await.is_err() {
        return Err(query(R::QUEUE_OPERATION)(sqlx::Error::PoolClosed));
    }
    answer
        .await
        .unwrap_or_else(|_| Err(query(R::OPERATION)(sqlx::Error::PoolClosed)))
}

async fn run<R: Request>(batch: impl Batch<R>, mut receiver: mpsc::Receiver<Waiting<R>>) {
    while let Some(first) = receiver.recv().await {
        let mut waiting = vec![first];
        while waiting.len() < R::MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => waiting.push(next),
                Err(_) => break,
            }
        }
        let (requests, replies): (Vec<R>, Vec<_>) = waiting
            .into_iter()
            .map(|waiting| (waiting.request, waiting.reply))
            .unzip();
        let answers = answers(&batch, &requests).await;
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }
}

/// One answer per request of `requests`.
async fn answers<R: Request>(batch: &impl Batch<R>, requests: &[R]) -> Vec<Result<R::Answer>> {
    match batch.run(requests).await {
        Ok(answers) => answers,
        Err(err) if requests.len() == 1 => vec![Err(err)],
        Err(err) => {
            let text = err.to_string();
            requests
                .iter()
                .map(|_| Err(query(R::OPERATION)(sqlx::Error::Protocol(text.clone()))))
                .collect()
        }
    }
}

/// Queues all of `requests` before the group commit of `batch` starts, runs it until the queue is
/// empty and returns the answers in order: what the batches do, with the batches known in advance.
#[cfg(test)]
pub(super) async fn run_queued<R: Request>(
    batch: impl Batch<R>,
    requests: Vec<R>,
) -> Vec<Result<R::Answer>> {
    let (sender, receiver) = mpsc::channel(requests.len().max(1));
    let mut answers = Vec::with_capacity(requests.len());
    for request in requests {
        let (reply, answer) = oneshot::channel();
        sender.send(Waiting { request, reply }).await.unwrap();
        answers.push(answer);
    }
    drop(sender);
    run(batch, receiver).await;
    let answers = futures_util::future::join_all(answers).await;
    answers.into_iter().map(|answer| answer.unwrap()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A number to double.
    #[derive(Debug, PartialEq)]
    struct Number(u32);

    impl Request for Number {
        type Answer = u32;
        const MAX_BATCH: usize = 2;
        const QUEUE_OPERATION: &'static str = "queue number";
        const OPERATION: &'static str = "double numbers";
    }

    /// Doubles its numbers, and fails a batch holding 0.
    struct Double;

    #[async_trait]
    impl Batch<Number> for Double {
        async fn run(&self, batch: &[Number]) -> Result<Vec<Result<u32>>> {
            if batch.contains(&Number(0)) {
                return Err(query("double")(sqlx::Error::RowNotFound));
            }
            Ok(batch.iter().map(|n| Ok(n.0 * 2)).collect())
        }
    }

    #[tokio::test]
    async fn batches_hold_at_most_their_most_and_a_failed_batch_fails_each_request() {
        let numbers = [1, 2, 0, 3, 0].into_iter().map(Number).collect();
        let answers = run_queued(Double, numbers).await;
        let answers: Vec<Option<u32>> = answers.into_iter().map(Result::ok).collect();
        assert_eq!(answers, [Some(2), Some(4), None, None, None]);
        let queue = start(Double);
        assert_eq!(submit(&queue, Number(5)).await.unwrap(), 10);
        let refused = submit(&queue, Number(0)).await.unwrap_err();
        assert!(refused.to_string().contains("double"), "{refused}");
    }
}
