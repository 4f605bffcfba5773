//! The SQLite store thread, with group commit.
//!
//! Every SQLite operation runs on one thread that owns the connection (see
//! the module docs of [`crate::store`]). A write is one transaction, and with
//! `synchronous=FULL` each commit costs an `fsync` of the WAL: at 64 slots and
//! about six writes per key that is more `fsync` per second than a slow disk
//! does, and slots queue behind the store (docs/benchmarks.md, issue #16).
//!
//! So writes that arrive while another is being committed are committed
//! together: the thread takes every transactional call already waiting,
//! runs each under its own `SAVEPOINT` inside one `BEGIN IMMEDIATE … COMMIT`,
//! and answers them only after that one commit, so "answered Ok" still means
//! "durably stored". A call that fails is rolled back to its savepoint alone;
//! the others in the group commit. Nothing waits for company: a lone write is
//! committed at once, so a quiet station pays no latency for this.

use super::StoreError;
use rusqlite::Connection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

/// At most this many calls share one commit, so the first caller of a long
/// queue is not kept waiting for all of it.
const MAX_GROUP: usize = 128;

/// Work sent to the store thread.
pub(super) enum Call {
    /// Runs alone, outside any transaction: reads, pragmas, and bodies that
    /// manage their own transactions (migrations, tests).
    Alone(Box<dyn FnOnce(&mut Connection) + Send>),
    /// One transaction's body, committed in a group.
    Grouped(Box<dyn GroupedCall>),
}

/// What the caller is told once its group's commit is known.
type Finish = Box<dyn FnOnce(Result<(), &rusqlite::Error>) + Send>;

/// A transaction body and the channel its answer goes back on.
pub(super) trait GroupedCall: Send {
    /// Runs the body under its own savepoint; returns how to answer the
    /// caller once the commit's outcome is known.
    fn run(self: Box<Self>, conn: &Connection) -> Finish;
    /// The group could not run this call (its transaction did not begin, or
    /// was rolled back by SQLite before the call's turn): nothing of it ran.
    fn refuse(self: Box<Self>, error: StoreError);
}

/// A typed [`GroupedCall`]: `body` answers on `reply`.
pub(super) struct TxCall<F, R> {
    pub body: F,
    pub reply: mpsc::SyncSender<Result<R, StoreError>>,
}

impl<F, R> GroupedCall for TxCall<F, R>
where
    F: FnOnce(&Connection) -> Result<R, StoreError> + Send,
    R: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Finish {
        let TxCall { body, reply } = *self;
        if let Err(e) = conn.execute_batch("SAVEPOINT call") {
            let _ = reply.send(Err(e.into()));
            return Box::new(|_| {});
        }
        match body(conn) {
            Ok(value) => match conn.execute_batch("RELEASE call") {
                Ok(()) => Box::new(move |commit| {
                    let _ = reply.send(commit.map(|()| value).map_err(copy_error));
                }),
                Err(e) => {
                    rollback_to_savepoint(conn);
                    let _ = reply.send(Err(e.into()));
                    Box::new(|_| {})
                }
            },
            Err(e) => {
                rollback_to_savepoint(conn);
                // The caller learns of its own failure now; the commit of the
                // others does not concern it.
                let _ = reply.send(Err(e));
                Box::new(|_| {})
            }
        }
    }

    fn refuse(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

/// Undoes a failed call's writes, leaving the group's transaction open. If
/// SQLite already rolled the whole transaction back (SQLITE_FULL, IOERR, …)
/// there is no savepoint left, and the group notices by `is_autocommit`.
fn rollback_to_savepoint(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK TO call; RELEASE call");
    }
}

/// One error for each caller of a group whose commit failed: the SQLite
/// code survives, so callers that look at it (disk full) still can.
fn copy_error(e: &rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            StoreError::Sql(rusqlite::Error::SqliteFailure(*code, message.clone()))
        }
        other => StoreError::NotCommitted(other.to_string()),
    }
}

/// Counters of the store thread (benchmarks: commits per key).
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Group transactions committed (each one `fsync` of the WAL).
    pub commits: AtomicU64,
    /// Transactional calls run within those commits (a call rolled back to
    /// its savepoint counts: it shared the transaction).
    pub grouped_calls: AtomicU64,
}

/// The thread's loop: ends when every sender is dropped.
pub(super) fn serve(mut conn: Connection, rx: mpsc::Receiver<Call>, stats: Arc<WriterStats>) {
    let mut held: Option<Call> = None;
    loop {
        let call = match held.take() {
            Some(call) => call,
            None => match rx.recv() {
                Ok(call) => call,
                Err(_) => return,
            },
        };
        match call {
            Call::Alone(f) => f(&mut conn),
            Call::Grouped(first) => {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(Call::Grouped(next)) => group.push(next),
                        // Order is kept: an Alone call runs after this group.
                        Ok(alone) => {
                            held = Some(alone);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit_group(&conn, group, &stats);
            }
        }
    }
}

/// Runs `group` in one transaction and answers every caller.
fn commit_group(conn: &Connection, group: Vec<Box<dyn GroupedCall>>, stats: &WriterStats) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        for call in group {
            call.refuse(copy_error(&e));
        }
        return;
    }
    let mut finishes = Vec::with_capacity(group.len());
    let mut calls = group.into_iter();
    for call in calls.by_ref() {
        finishes.push(call.run(conn));
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back under the call (a
            // full disk, an I/O error): what ran before it is gone too.
            break;
        }
    }
    let outcome = if conn.is_autocommit() {
        Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
            Some("the transaction was rolled back; nothing of it was stored".into()),
        ))
    } else {
        match conn.execute_batch("COMMIT") {
            Ok(()) => Ok(()),
            Err(e) => {
                // COMMIT can fail and leave the transaction open (SQLITE_BUSY):
                // end it, so nothing of it commits later by surprise.
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                Err(e)
            }
        }
    };
    if let Err(e) = &outcome {
        for call in calls {
            call.refuse(copy_error(e));
        }
    }
    if outcome.is_ok() {
        stats.commits.fetch_add(1, Ordering::Relaxed);
        stats
            .grouped_calls
            .fetch_add(finishes.len() as u64, Ordering::Relaxed);
    }
    for finish in finishes {
        finish(outcome.as_ref().map(|_| ()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// A store on disk with a scratch table, and its thread held by an
    /// `Alone` call until the returned sender is dropped or sent to.
    fn held_store(dir: &std::path::Path) -> (Store, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let store = Store::open(&dir.join("state.db")).unwrap();
        store
            .call(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER NOT NULL)")?))
            .unwrap();
        let (gate, gate_rx) = mpsc::channel::<()>();
        let (entered, entered_rx) = mpsc::channel();
        let s = store.clone();
        let blocker = std::thread::spawn(move || {
            s.call(move |_| {
                entered.send(()).unwrap();
                let _ = gate_rx.recv();
                Ok(())
            })
            .unwrap();
        });
        entered_rx.recv().unwrap();
        (store, gate, blocker)
    }

    type Body = Box<dyn FnOnce(&Connection) -> Result<(), StoreError> + Send>;

    /// Queues `body` behind the held thread without waiting for its answer.
    fn queue(store: &Store, body: Body) -> mpsc::Receiver<Result<(), StoreError>> {
        let (reply, rx) = mpsc::sync_channel(1);
        store
            .sqlite()
            .unwrap()
            .calls
            .send(Call::Grouped(Box::new(TxCall { body, reply })))
            .unwrap();
        rx
    }

    /// Queues `bodies` behind the held thread, lets it go: they run as one
    /// group. Their answers, in order.
    fn run_group(dir: &std::path::Path, bodies: Vec<Body>) -> (Store, Vec<Result<(), StoreError>>) {
        let (store, gate, blocker) = held_store(dir);
        let answers: Vec<_> = bodies.into_iter().map(|b| queue(&store, b)).collect();
        gate.send(()).unwrap();
        blocker.join().unwrap();
        let answers = answers.into_iter().map(|a| a.recv().unwrap()).collect();
        (store, answers)
    }

    fn insert(x: i64) -> Body {
        Box::new(move |c| {
            c.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
            Ok(())
        })
    }

    fn stored(store: &Store) -> Vec<i64> {
        store
            .call(|c| {
                let mut stmt = c.prepare("SELECT x FROM t ORDER BY x")?;
                let rows = stmt
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .unwrap()
    }

    #[test]
    fn writes_waiting_together_share_one_commit_and_each_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let (store, answers) = run_group(dir.path(), (1..=10).map(insert).collect());
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        let stats = store.writer_stats().unwrap();
        assert_eq!(
            stats.commits.load(Ordering::Relaxed),
            1,
            "one fsync for ten writes"
        );
        assert_eq!(stats.grouped_calls.load(Ordering::Relaxed), 10);
        assert_eq!(stored(&store), (1..=10).collect::<Vec<_>>());
        // Durable: a second connection (another process) sees all ten.
        let other = Connection::open(dir.path().join("state.db")).unwrap();
        let n: i64 = other
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 10);
    }

    #[test]
    fn a_failing_call_is_rolled_back_alone_and_the_rest_of_its_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let failing: Body = Box::new(|c| {
            c.execute("INSERT INTO t (x) VALUES (2)", [])?;
            Err(StoreError::UnknownJob("B".into()))
        });
        let (store, answers) = run_group(dir.path(), vec![insert(1), failing, insert(3)]);
        assert!(answers[0].is_ok());
        assert!(matches!(&answers[1], Err(StoreError::UnknownJob(id)) if id == "B"));
        assert!(answers[2].is_ok());
        assert_eq!(
            stored(&store),
            vec![1, 3],
            "B's insert was undone, A's and C's kept"
        );
    }

    /// SQLite may roll the whole transaction back under a statement (a full
    /// disk, an I/O error); here the body does it. The calls before it are
    /// then told they failed, the calls after it never run, and the next
    /// write finds a clean connection.
    #[test]
    fn a_transaction_rolled_back_under_the_group_fails_every_call_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let rollback: Body = Box::new(|c| {
            c.execute("INSERT INTO t (x) VALUES (2)", [])?;
            c.execute_batch("ROLLBACK")?;
            Ok(())
        });
        let (store, answers) = run_group(dir.path(), vec![insert(1), rollback, insert(3)]);
        for (name, answer) in ["A", "B", "C"].iter().zip(&answers) {
            assert!(answer.is_err(), "{name} was told Ok");
        }
        assert!(stored(&store).is_empty());
        store
            .call_tx(|c| Ok(c.execute("INSERT INTO t (x) VALUES (4)", [])?))
            .unwrap();
        assert_eq!(stored(&store), vec![4]);
    }

    /// A real SQLITE_FULL (the database may not grow past its page limit):
    /// whatever SQLite chooses to roll back, a caller told Ok has its row and
    /// a caller told Err has none.
    #[test]
    fn under_a_full_database_every_answer_matches_what_was_stored() {
        let dir = tempfile::tempdir().unwrap();
        // Room for a few rows more than the schema, not for a megabyte.
        let limit: Body = Box::new(|c| {
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            c.query_row(
                &format!("PRAGMA max_page_count = {}", pages + 8),
                [],
                |_| Ok(()),
            )?;
            c.execute("INSERT INTO t (x) VALUES (1)", [])?;
            Ok(())
        });
        let big: Body = Box::new(|c| {
            c.execute("INSERT INTO t (x) VALUES (2)", [])?;
            c.execute("CREATE TABLE filler AS SELECT randomblob(1000000) AS b", [])?;
            Ok(())
        });
        let (store, answers) = run_group(dir.path(), vec![limit, big, insert(3)]);
        let full = &answers[1];
        assert!(
            matches!(full, Err(StoreError::Sql(rusqlite::Error::SqliteFailure(e, _))) if e.code == rusqlite::ErrorCode::DiskFull),
            "{full:?}"
        );
        let rows = stored(&store);
        for (x, answer) in [1, 2, 3].iter().zip(&answers) {
            assert_eq!(
                answer.is_ok(),
                rows.contains(x),
                "row {x}: answered {answer:?}, stored {rows:?}"
            );
        }
    }
}
