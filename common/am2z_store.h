/*  am2z_store.h — the broker's LMDB store.

    One LMDB environment per broker in cfg->data_dir (created if missing),
    with named databases:

        sessions   session id -> envelope(state bytes)       sealed
        jobs       job id     -> envelope(job record)        sealed
        results    job id     -> envelope(result)            sealed
        dlq        job id     -> envelope(dead letter)       sealed
        runs       run id     -> envelope(workflow run)      sealed
        ready      index key  -> small value                 raw (indexes)
        delayed    index key  -> small value                 raw (indexes)
        meta       name       -> value                       raw

    Sealed databases hold envelopes (am2z_envelope.h): every read verifies the
    SHA-256 and reports AM2Z_EINTEGRITY instead of returning bad bytes. Raw
    databases hold the broker's own small index entries.

    Writes happen in batches: one LMDB write transaction that gathers the
    changes of one loop turn (group commit). Each operation in a batch
    reports its own outcome at once (a CAS conflict fails that operation
    only); am2z_store_commit() makes them all durable together. If LMDB
    reports the map or disk full, the batch is poisoned: every later
    operation and the commit return AM2Z_ERESOURCE and nothing of it is
    written. Nothing crashes.

    Durability: AM2Z_DURABILITY_SYNC fsyncs in every commit (default);
    AM2Z_DURABILITY_PERIODIC commits without fsync and am2z_store_flush_due()
    fsyncs at most flush_interval_ms later — a power loss or kernel crash can
    lose commits of that last interval (a process crash loses nothing: the
    data is in the OS page cache).

    Limits: max_state_size and max_sessions of 0 mean "no limit". Session
    ids must pass am2z_session_id_valid() (else AM2Z_EINVAL); other keys are
    1 .. 511 bytes (LMDB's key limit; else AM2Z_EINVAL).

    Thread safety: NOT thread-safe. A store belongs to the one thread that
    opened it (the broker's store thread); no txn or env crosses threads.
    Never use a store across fork().
*/
#ifndef AM2Z_STORE_H_INCLUDED
#define AM2Z_STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "am2z_config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct am2z_store_t am2z_store_t;
typedef struct am2z_store_batch_t am2z_store_batch_t;

typedef enum {
    AM2Z_DB_SESSIONS = 0,
    AM2Z_DB_JOBS,
    AM2Z_DB_RESULTS,
    AM2Z_DB_DLQ,
    AM2Z_DB_RUNS,
    AM2Z_DB_REPEATS,     /* repeatable jobs (sealed) */
    AM2Z_DB_META,        /* raw */
    AM2Z_DB_IDEM,        /* raw: idempotency key -> first job */
    AM2Z_DB_DONE,        /* raw: retention index (processor, finish time, job) */
    AM2Z_DB_SESSINFO,    /* raw: session metadata (created-at, ...) */
    AM2Z_DB_COUNT_
} am2z_db_t;

/*  True for the databases whose values are envelopes. */
bool am2z_db_sealed(am2z_db_t db);
const char *am2z_db_name(am2z_db_t db);

/*  A record read back from a sealed database. data is owned by the caller
    (free() it, or am2z_record_clear()). */
typedef struct {
    uint64_t version;
    uint64_t created_ms;
    uint64_t updated_ms;
    uint8_t *data;
    size_t size;
} am2z_record_t;

void am2z_record_clear(am2z_record_t *rec);

typedef struct {
    uint64_t sessions;          /* entries in sessions */
    uint64_t jobs;              /* entries in jobs */
    uint64_t entries[AM2Z_DB_COUNT_];  /* entries per database */
    uint64_t map_size;          /* configured map size, bytes */
    uint64_t used_bytes;        /* pages in use * page size */
    uint64_t unsynced_commits;  /* periodic mode: commits not yet fsynced */
    uint64_t syncs;             /* fsyncs done by flush / flush_due so far (with the
                                   writer thread: its flushes when it ran out of work) */
    uint64_t writer_commits;    /* writer thread: LMDB txns it committed (0 without) */
    uint64_t writer_sets;       /* ... the batches they carried (>= commits: grouped) */
    uint64_t alloc_bytes;       /* disk blocks allocated for data.mdb (ahead of use) */
    uint64_t retired_entries;   /* entries of databases an older version kept
                                   (bysession) dropped when this store opened */
    int write_errno;            /* errno of the last failed write when the file system
                                   refused it (ENOSPC, EDQUOT: disk full; EFBIG: file
                                   size limit), 0 when it was LMDB (map full) or none */
} am2z_store_stats_t;

/*  Opens (creating when needed) the environment in cfg->data_dir with
    cfg->map_size, cfg->durability, cfg->flush_interval_ms,
    cfg->max_state_size and cfg->max_sessions. Returns AM2Z_OK,
    AM2Z_EIO (cannot create/open: err names path and reason), AM2Z_ERESOURCE
    (map size too small for the existing data), AM2Z_EINVAL (NULL cfg/out,
    empty data_dir, map_size 0), AM2Z_EBUSY (cfg->exclusive and another
    broker holds the data dir's lock: err names it and its pid) or
    AM2Z_ENOMEM. err may be NULL. map_size is rounded up to a multiple of
    the OS page size. With cfg->exclusive the store holds the data dir's
    lock (am2z.lock, flock) until am2z_store_destroy. */
int am2z_store_open(const am2z_config_t *cfg, am2z_store_t **out,
                    char *err, size_t err_size);

/*  Commits nothing pending (an open batch is aborted), fsyncs, closes.
    NULL-safe, idempotent. */
void am2z_store_destroy(am2z_store_t **self_p);

/* ---------------------------------------------------------------------------
   Batches (group commit). At most one batch is open at a time.
   ------------------------------------------------------------------------ */

/*  Returns AM2Z_OK, AM2Z_ESTATE (a batch is already open), AM2Z_EIO.
    *out is borrowed from the store: valid until commit or abort (which
    null the caller's pointer) and never to be freed. Every batch_* call
    returns AM2Z_ESTATE for a batch that is not open, and once the batch is
    poisoned the poisoning code (AM2Z_ERESOURCE, or AM2Z_EIO for another
    LMDB write failure). Argument errors (AM2Z_EINVAL) and per-operation
    outcomes (AM2Z_ECONFLICT, AM2Z_ENOTFOUND, limits) do not poison. */
int am2z_store_begin(am2z_store_t *self, am2z_store_batch_t **out);

/*  Commits and frees the batch, nulling *batch_p. Returns AM2Z_OK,
    AM2Z_ERESOURCE (map/disk full: nothing written), AM2Z_EIO. After any
    return the batch is gone. */
int am2z_store_commit(am2z_store_batch_t **batch_p);

/*  Discards the batch. NULL-safe, idempotent. */
void am2z_store_abort(am2z_store_batch_t **batch_p);

/*  Session state, compare-and-set on version.
    expected_version: the version the writer read; 0 means "the session must
    not exist yet". The stored version must equal it, else AM2Z_ECONFLICT.
    new_version must be greater than expected_version (else AM2Z_EINVAL).
    Returns AM2Z_OK, AM2Z_ECONFLICT, AM2Z_EINVAL (bad session id),
    AM2Z_ERESOURCE (payload > max_state_size, sessions >= max_sessions for
    a new one, map full), AM2Z_EINTEGRITY (stored envelope corrupt). */
int am2z_batch_put_state(am2z_store_batch_t *batch, const char *session_id,
                         uint64_t expected_version, uint64_t new_version,
                         const uint8_t *state, size_t state_size,
                         uint64_t now_ms);

/*  Returns AM2Z_OK, AM2Z_ENOTFOUND or AM2Z_EINVAL (bad session id). */
int am2z_batch_delete_state(am2z_store_batch_t *batch, const char *session_id);

/*  Generic sealed records (jobs, results, dlq, runs): unconditional write of
    an envelope with the given version. Overwriting keeps the created time
    of the old record (when it verifies). Returns AM2Z_OK, AM2Z_EINVAL (raw
    db or bad key), AM2Z_ERESOURCE. */
int am2z_batch_put_record(am2z_store_batch_t *batch, am2z_db_t db,
                          const void *key, size_t key_size, uint64_t version,
                          const uint8_t *data, size_t size, uint64_t now_ms);

/*  am2z_batch_put_record with the envelope's created time given by the
    caller (a new key, or a record whose own data says when it was made):
    no read of an older record first, which with the writer thread is a
    lookup through every set in flight and LMDB. Same returns; AM2Z_EINVAL
    for AM2Z_DB_SESSIONS (states go through am2z_batch_put_state). */
int am2z_batch_put_record_at(am2z_store_batch_t *batch, am2z_db_t db,
                             const void *key, size_t key_size, uint64_t version,
                             const uint8_t *data, size_t size, uint64_t created_ms,
                             uint64_t now_ms);

/*  Raw index entries. Returns AM2Z_OK, AM2Z_EINVAL (sealed db), AM2Z_ERESOURCE. */
int am2z_batch_put_raw(am2z_store_batch_t *batch, am2z_db_t db,
                       const void *key, size_t key_size,
                       const void *value, size_t value_size);

/*  Deletes a key from any database. Returns AM2Z_OK or AM2Z_ENOTFOUND. */
int am2z_batch_del(am2z_store_batch_t *batch, am2z_db_t db,
                   const void *key, size_t key_size);

/*  Deletes a key that may or may not be there, for a caller that does not
    need to know: never AM2Z_ENOTFOUND, and with the writer thread no
    lookup first (the delete is one write-set entry; the writer skips a key
    that is not there). AM2Z_EINVAL for AM2Z_DB_SESSIONS, whose count
    (max_sessions) needs to know. */
int am2z_batch_del_any(am2z_store_batch_t *batch, am2z_db_t db,
                       const void *key, size_t key_size);

/*  Reads inside the batch see its own uncommitted writes. Same contracts as
    the store-level getters below. */
int am2z_batch_get_state(am2z_store_batch_t *batch, const char *session_id,
                         am2z_record_t *rec);
int am2z_batch_get_record(am2z_store_batch_t *batch, am2z_db_t db,
                          const void *key, size_t key_size, am2z_record_t *rec);

/*  True when the batch has written the session's state (put or delete)
    so that it now differs from the last commit's, or when that cannot be
    told (poisoned batch, read failure): whoever reads the state through
    the store getters (they see commits only) must wait for the commit.
    False when no batch is open. Compares the stored envelopes byte for
    byte; verifies nothing. */
bool am2z_batch_state_pending(am2z_store_batch_t *batch, const char *session_id);

/*  A walk's callback (am2z_store_each, am2z_batch_each). */
typedef int (am2z_store_each_fn)(const void *key, size_t key_size,
                                 const void *value, size_t value_size, void *arg);

/*  Raw reads inside the batch (see its own writes). Caller owns *value
    (free()). Returns AM2Z_OK, AM2Z_ENOTFOUND, AM2Z_EINVAL (sealed db or bad
    key), AM2Z_EIO, AM2Z_ENOMEM, or the batch's poison code. */
int am2z_batch_get_raw(am2z_store_batch_t *batch, am2z_db_t db, const void *key,
                       size_t key_size, void **value, size_t *value_size);

/*  Like am2z_store_each, inside the batch: the walk sees the batch's own
    uncommitted writes. fn must NOT write to the batch during the walk
    (collect keys, then write after it returns). */
int am2z_batch_each(am2z_store_batch_t *batch, am2z_db_t db, const void *start,
                    size_t start_size, am2z_store_each_fn *fn, void *arg);

/* ---------------------------------------------------------------------------
   Single operations (each its own batch) and reads.
   ------------------------------------------------------------------------ */

/*  One-shot CAS write: begin + put_state + commit. */
int am2z_store_put_state(am2z_store_t *self, const char *session_id,
                         uint64_t expected_version, uint64_t new_version,
                         const uint8_t *state, size_t state_size,
                         uint64_t now_ms);

/*  Returns AM2Z_OK or AM2Z_ENOTFOUND. */
int am2z_store_delete_state(am2z_store_t *self, const char *session_id);

/*  Reads and verifies a session's state. Returns AM2Z_OK (rec filled, caller
    owns rec->data), AM2Z_ENOTFOUND, AM2Z_EINTEGRITY, AM2Z_EINVAL. */
int am2z_store_get_state(am2z_store_t *self, const char *session_id,
                         am2z_record_t *rec);

/*  Reads and verifies a sealed record. Same returns as get_state. */
int am2z_store_get_record(am2z_store_t *self, am2z_db_t db,
                          const void *key, size_t key_size, am2z_record_t *rec);

/*  Reads a raw entry; caller owns *value (free()). AM2Z_OK / AM2Z_ENOTFOUND. */
int am2z_store_get_raw(am2z_store_t *self, am2z_db_t db, const void *key,
                       size_t key_size, void **value, size_t *value_size);

/*  Calls fn for every key of db in key order, starting at the first key >=
    (start, start_size) (NULL = from the beginning). The key and value are
    borrowed for the call only (values of sealed dbs are the raw envelopes,
    not verified: use get_record for the payload). fn returns 0 to go on,
    non-zero to stop (that value is returned, so fn should return a positive
    value to tell its stop apart from an error). Returns AM2Z_OK, AM2Z_EINVAL
    or AM2Z_EIO. The walk sees the last committed data (not an open batch);
    fn may call the store's readers and batch functions, but writes it
    commits are not guaranteed to be seen by this walk. */
int am2z_store_each(am2z_store_t *self, am2z_db_t db, const void *start,
                    size_t start_size, am2z_store_each_fn *fn, void *arg);

/*  Calls fn(session_id, arg) for every stored session in id order.
    fn returns 0 to go on. Returns AM2Z_OK, or fn's non-zero value. */
typedef int (am2z_store_session_fn)(const char *session_id, void *arg);
int am2z_store_list_sessions(am2z_store_t *self, am2z_store_session_fn *fn,
                             void *arg);

/*  Durability. flush fsyncs now (no-op when nothing is pending; with
    am2z_store_defer_meta() also a commit waiting for its meta flush).
    flush_due fsyncs only when periodic mode has unsynced commits older than
    flush_interval_ms, and returns the ms until it next needs calling
    (UINT64_MAX when nothing is pending) through *next_ms (may be NULL).
    now_ms is on the am2z_store_now_ms() clock (monotonic), which is what
    commits are stamped with. Both return AM2Z_OK or AM2Z_EIO (fsync failed;
    the commits stay pending and the next call retries). */
int am2z_store_flush(am2z_store_t *self);
int am2z_store_flush_due(am2z_store_t *self, uint64_t now_ms, uint64_t *next_ms);

/*  Sync mode only, before any batch is open: commits stop flushing their
    meta page (LMDB MDB_NOMETASYNC). A commit then returns once its data is
    on disk, but it is durable only after the next fdatasync of the file:
    the next commit that writes anything (its data flush covers the earlier
    meta page) or am2z_store_sync(). The database stays consistent either
    way; a power loss may undo the commits after am2z_store_durable().
    Callers that answer "durable" must wait for am2z_store_durable() to
    reach the commit (am2z_store_committed() right after it). Returns
    AM2Z_OK, AM2Z_EINVAL (not sync mode, batch open) or AM2Z_EIO. */
int am2z_store_defer_meta(am2z_store_t *self);

/*  Sync mode only, before any batch is open and instead of
    am2z_store_defer_meta(): moves commits to a writer thread. A batch then
    gathers its writes in memory; am2z_store_commit() hands them to the
    writer and returns at once (AM2Z_OK, or what the batch already
    returned), and the writer applies every batch handed over since its
    last commit in one LMDB txn and flushes it. Every read, batch-level or
    store-level, sees the batches committed this way at once, as in direct
    mode; only durability lags: am2z_store_durable() reaches
    am2z_store_committed() when the writer's flush is done, and
    am2z_store_event_fd() becomes readable each time it moves. Errors of a
    write are still returned by the write (a disk full through the blocks
    allocated ahead; a batch that could fill the map drains the writer and
    finishes as a direct LMDB txn, so a full map is reported as before).
    Failures only the writer can meet (an I/O error of the flush) are
    sticky: am2z_store_poll() returns them, durable() stops, and every
    later begin returns AM2Z_EIO. am2z_store_committed() / _durable() then
    count batches (1, 2, ...), not LMDB txn ids. am2z_store_stats() waits
    for the writer to apply what it was handed. Returns AM2Z_OK, AM2Z_EINVAL
    (not sync mode, batch open, defer_meta on) or AM2Z_EIO. */
int am2z_store_pipeline(am2z_store_t *self);

/*  The writer's notification fd (readable when durable() moved or the
    writer failed), for poll(2); -1 without am2z_store_pipeline(). */
int am2z_store_event_fd(const am2z_store_t *self);

/*  Clears the notification and frees what the writer finished. Returns
    AM2Z_OK, or the writer's sticky failure (AM2Z_EIO, AM2Z_ERESOURCE). */
int am2z_store_poll(am2z_store_t *self);

/*  LMDB txn id of the last commit that wrote something, and of the last
    one known to be on disk (equal unless am2z_store_defer_meta() is on and
    a commit waits for its meta flush). 0 for NULL. */
uint64_t am2z_store_committed(const am2z_store_t *self);
uint64_t am2z_store_durable(const am2z_store_t *self);

/*  Makes every commit durable now (one fdatasync when something waits):
    afterwards am2z_store_durable() == am2z_store_committed(). Also does
    what am2z_store_flush() does. AM2Z_OK, AM2Z_EINVAL, AM2Z_EIO. */
int am2z_store_sync(am2z_store_t *self);

/*  Monotonic milliseconds (am2z_clock_mono_us() / 1000): the clock of
    am2z_store_flush_due. */
uint64_t am2z_store_now_ms(void);

/*  Fills *stats from one read snapshot. Returns AM2Z_OK, AM2Z_EINVAL, AM2Z_EIO. */
int am2z_store_stats(am2z_store_t *self, am2z_store_stats_t *stats);

#ifdef __cplusplus
}
#endif
#endif
