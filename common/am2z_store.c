/*  am2z_store.c — see am2z_store.h.

    LMDB choices and why:

    - MDB_NOTLS: reader slots are tied to the txn, not the thread, so the
      store thread can hold a cached read txn (reset between reads) and a
      write txn at the same time, and am2z_store_each's callback may read
      again while the outer cursor is live.
    - Periodic durability opens the env with MDB_NOSYNC: commits reach the
      OS page cache only, and am2z_store_flush_due() calls mdb_env_sync(1).
      A crash of the process itself loses nothing (the page cache has it).
    - Periodic durability adds MDB_WRITEMAP: LMDB writes its pages in the
      shared map instead of pwrite()ing a copy of each dirty page at
      commit. A loop turn's commit went from ≈ 15 µs (≈ 7 scattered
      pwrites) to ≈ 2.5 µs, broker CPU per job −20 %
      (bench/where-the-time-goes.md). Not in sync mode: there every
      commit's flush write-protects the pages again, and the next commit
      takes a page fault for each one it touches (measured: broker CPU per
      job 78 -> 89 µs). Two costs, both handled here: (1) the map is
      writable, so a stray write through a pointer into it would corrupt
      the file: the store only hands out copies or const views, and a
      store that shares its process with application code (the embedded
      runtime, cfg->embedded) keeps the map read-only; (2) LMDB
      sizes the file to the map (sparse), and a page fault on an
      unallocated block of a full disk is SIGBUS, not ENOSPC.
    - So the store allocates the file's blocks ahead of use
      (posix_fallocate, in S_ALLOC_STEP steps) and bounds what a batch can
      grow the file by (every write adds its size plus S_WRITE_PAGES pages
      of B-tree copies and splits): a write that could reach past the
      allocated blocks first allocates more, and when the disk is full it
      fails the batch with ENOSPC (a resource error) before LMDB touches
      the page. Sync mode does the same: a pwrite() into a full disk can
      come back short, which LMDB reports as EIO, so there too the
      allocation is what tells a full disk from a broken one.
    - One batch = one write txn, embedded in the store (no allocation per
      loop turn; at most one batch is open, as LMDB allows one writer).
    - A write that fails with MDB_MAP_FULL / MDB_TXN_FULL / ENOSPC leaves
      the LMDB txn unusable (MDB_TXN_ERROR), so the batch aborts it at once
      and remembers the error: every later operation and the commit return
      it, and nothing of the batch reaches the disk.
    - am2z_store_defer_meta() (sync mode) sets MDB_NOMETASYNC: a commit
      still fdatasyncs its data pages before it writes its meta page, but
      that meta page is written without a flush. LMDB stays consistent (ACI)
      and the commit becomes durable at the next fdatasync of the file:
      the data flush of the next commit that writes anything, or
      am2z_store_sync(). The store tracks this by LMDB txn id
      (committed_txn / durable_txn) so the caller can hold back what it
      promised about a commit until it is durable.
    - am2z_store_pipeline() (sync mode, the broker's default) moves
      commits to a writer thread: see "Writer thread" below.
    - Reads outside a batch renew one cached read-only txn and reset it
      when done, so a snapshot never outlives the call (it would pin pages
      and make the file grow). A staged batch (writer thread) holds one
      snapshot from its begin to its commit, a loop turn.
    - A broker's store (cfg->exclusive) holds flock(LOCK_EX) on am2z.lock in
      the data dir for its lifetime. LMDB lets several processes open one
      environment (its own lock.mdb serializes their writers), but a
      broker keeps the queue, the leases and the sessions in memory beside
      the file: two brokers on one data dir would each lease the same jobs.
      flock, not fcntl locks: it belongs to the open file, so a second open
      in the same process (two embedded runtimes) conflicts too, and the
      kernel drops it when the process dies, SIGKILL included, so a restart
      never finds a stale lock. Stores opened without it (tests, tools
      that read beside a running broker) take no lock.
*/
#include "am2z_store.h"

#include "am2z_clock.h"
#include "am2z_envelope.h"
#include "am2z_error.h"
#include "am2z_wset.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static void s_pipeline_stop(am2z_store_t *self);
static void s_drop_retired(am2z_store_t *self);

/*  Databases older versions kept and this one does not: dropped (with
    their pages) when the store opens. bysession indexed results by
    session until the broker kept that index in memory. */
static const char *const s_retired_dbs[] = { "bysession" };

static const char *const s_db_names[AM2Z_DB_COUNT_] = {
    [AM2Z_DB_SESSIONS] = "sessions",
    [AM2Z_DB_JOBS] = "jobs",
    [AM2Z_DB_RESULTS] = "results",
    [AM2Z_DB_DLQ] = "dlq",
    [AM2Z_DB_RUNS] = "runs",
    [AM2Z_DB_REPEATS] = "repeats",
    [AM2Z_DB_META] = "meta",
    [AM2Z_DB_IDEM] = "idem",
    [AM2Z_DB_DONE] = "done",
    [AM2Z_DB_SESSINFO] = "sessinfo",
};

/*  Invariants: txn is NULL exactly when the batch is closed or poisoned;
    poison != 0 only while the batch is open (it is the code every later
    call returns). */
struct am2z_store_batch_t {
    am2z_store_t *store;     /* owner; the batch is embedded in it */
    MDB_txn *txn;            /* the write txn, or NULL */
    bool open;               /* between begin and commit/abort */
    int poison;              /* AM2Z_ERESOURCE / AM2Z_EIO once a write failed */
    uint64_t bound;          /* highest file offset this txn may reach (estimate) */
    /* staged (am2z_store_pipeline): the writes wait in ws, txn stays NULL */
    am2z_wset_t *ws;         /* the batch's write set, or NULL (direct: txn) */
    uint64_t growth;         /* what this batch added to bound */
    int64_t sessions_delta;  /* sessions it creates minus those it deletes */
};

/*  A write set handed to the writer thread (see "Writer thread"). */
typedef struct s_stage {
    am2z_wset_t *ws;
    uint64_t seq;                 /* 1, 2, ...: the order of hand-over */
    uint64_t growth;              /* its batch's bound growth */
    struct s_stage *prev, *next;  /* the loop's in-flight list, older first */
    struct s_stage *wnext;        /* the writer's queue (under mu) */
} s_stage_t;

/*  Settled write sets kept for reuse, so most turns take their set from
    here instead of allocating it. Two: each spare keeps a 64 KiB block and
    its arrays (≈ 100 KB), and the broker's RSS has little room to spare. */
#define S_SPARE_SETS 2

/*  Invariants: rtxn, when not NULL, is a read-only txn that is reset
    (holding no snapshot) unless rtxn_busy. unsynced_commits > 0 only in
    periodic mode. */
struct am2z_store_t {
    MDB_env *env;                       /* owned */
    MDB_dbi dbi[AM2Z_DB_COUNT_];        /* handles of the named databases */
    char path[AM2Z_PATH_MAX];           /* data_dir, for messages */
    uint64_t map_size;                  /* bytes actually configured */
    int durability;                     /* am2z_durability_t */
    uint64_t flush_interval_ms;         /* periodic: longest fsync delay */
    uint64_t max_state_size;            /* 0 = unlimited */
    uint64_t max_sessions;              /* 0 = unlimited */
    size_t max_key;                     /* mdb_env_get_maxkeysize */
    MDB_txn *rtxn;                      /* cached read txn, or NULL */
    bool rtxn_busy;                     /* rtxn currently holds a snapshot */
    am2z_store_batch_t batch;           /* the one batch */
    uint64_t unsynced_commits;          /* commits not yet fsynced */
    uint64_t unsynced_since_ms;         /* mono ms of the oldest of them */
    uint64_t syncs;                     /* fsyncs done by flush / flush_due */
    uint64_t retired_entries;           /* s_drop_retired: entries it dropped */
    bool defer_meta;                    /* sync mode + MDB_NOMETASYNC (defer_meta) */
    uint64_t committed_txn;             /* LMDB txn id of the last commit that wrote */
    uint64_t durable_txn;               /* ... of the last one known on disk */
    int fd;                             /* the data file (LMDB's), or -1 */
    uint64_t alloc_end;                 /* disk blocks of data.mdb allocated below this */
    uint64_t page_size;                 /* LMDB's page size */
    int last_write_error;               /* LMDB / errno code of the last failed write */
    int lock_fd;                        /* am2z.lock, flocked (cfg->exclusive), or -1 */
    /* writer thread (am2z_store_pipeline); committed_txn / durable_txn
       then count write sets (seq), not LMDB txn ids */
    bool piped;
    pthread_t writer;
    pthread_mutex_t mu;
    pthread_cond_t wake;                /* the writer waits for work */
    pthread_cond_t progress;            /* the loop waits for the writer */
    s_stage_t *q_head, *q_tail;         /* handed over, not yet taken (mu) */
    bool stop;                          /* (mu) */
    int w_error;                        /* the writer's failure, sticky (mu) */
    uint64_t w_applied;                 /* seq the writer committed up to (atomic) */
    uint64_t w_durable;                 /* seq known on disk up to (atomic) */
    int efd;                            /* eventfd the writer signals, or -1 */
    s_stage_t *fl_head, *fl_tail;       /* in flight: handed over, not yet settled */
    unsigned walks;                     /* store / batch walks in progress */
    bool snap_held;                     /* a staged batch holds rtxn open until it ends */
    uint64_t snap_from;                 /* ... a snapshot holding every set up to this */
    am2z_wset_t *spare[S_SPARE_SETS];   /* settled sets, cleared, for the next begins */
    unsigned nspare;
    uint64_t sessions_n;                /* sessions in the committed view */
    uint64_t w_commits, w_sets;         /* the writer's LMDB txns, batches in them (mu) */
};

/*  Allocation ahead of use (MDB_WRITEMAP; see the top of this file). */
#define S_ALLOC_STEP ((uint64_t)16 << 20)
#define S_WRITE_PAGES 8u                 /* B-tree pages one write may copy or add */
#define S_COMMIT_SLACK ((uint64_t)1 << 20) /* freelist and meta writes of a commit */
#define S_INFLIGHT_MAX 32u               /* sets handed over and not yet applied */

bool
am2z_db_sealed(am2z_db_t db)
{
    return db >= AM2Z_DB_SESSIONS && db <= AM2Z_DB_REPEATS;
}

const char *
am2z_db_name(am2z_db_t db)
{
    if ((int)db < 0 || db >= AM2Z_DB_COUNT_)
        return "unknown";
    return s_db_names[db];
}

void
am2z_record_clear(am2z_record_t *rec)
{
    if (!rec)
        return;
    free(rec->data);
    memset(rec, 0, sizeof *rec);
}

uint64_t
am2z_store_now_ms(void)
{
    return am2z_clock_mono_us() / 1000u;
}


/*  Maps an LMDB or errno code from a write to our band. */
static int
s_write_error(int rc)
{
    switch (rc) {
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
    case MDB_PAGE_FULL:
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return AM2Z_ERESOURCE;
    case ENOMEM:
        return AM2Z_ENOMEM;
    default:
        return AM2Z_EIO;
    }
}

/*  What a failed commit (or flush) returns: a resource error when the map
    or the disk is full, else an I/O error. */
static int
s_fail_code(int rc)
{
    return s_write_error(rc) == AM2Z_ERESOURCE ? AM2Z_ERESOURCE : AM2Z_EIO;
}

/*  Makes sure the data file's blocks below end are allocated, a step
    ahead (never past the map: LMDB stops there with MDB_MAP_FULL).
    Returns 0 or an errno (ENOSPC when the disk is full). */
static int
s_allocate(am2z_store_t *self, uint64_t end)
{
    if (end <= self->alloc_end || self->fd < 0)
        return 0;
    uint64_t to = (end + S_ALLOC_STEP - 1) / S_ALLOC_STEP * S_ALLOC_STEP;
    if (to > self->map_size)
        to = self->map_size;
    if (to <= self->alloc_end)
        return 0;
    int e = posix_fallocate(self->fd, (off_t)self->alloc_end,
                            (off_t)(to - self->alloc_end));
    if (e != 0 && end < to) {
        /* the step does not fit: what this write needs may still */
        to = end;
        e = posix_fallocate(self->fd, (off_t)self->alloc_end,
                            (off_t)(to - self->alloc_end));
    }
    if (e == 0)
        self->alloc_end = to;
    return e;
}

/*  mkdir -p: creates path and any missing parents. */
static int
s_mkdir_p(const char *path)
{
    char buf[AM2Z_PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

/*  Takes the data dir's broker lock (see the top of this file). Returns
    the locked fd, or -1 with err set and *rc the error. */
static int
s_lock_dir(const char *dir, char *err, size_t err_size, int *rc)
{
    char path[AM2Z_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/am2z.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        am2z_errbuf(err, err_size, "store: cannot open %s: %s", path, strerror(errno));
        *rc = AM2Z_EIO;
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            char pid[32] = "";
            ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
            pid[n > 0 ? n : 0] = '\0';
            pid[strcspn(pid, "\n")] = '\0';
            am2z_errbuf(err, err_size,
                        "store: %s is in use by another broker%s%s%s (%s is locked): "
                        "a data dir serves one broker at a time",
                        dir, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "", path);
            *rc = AM2Z_EBUSY;
        } else {
            am2z_errbuf(err, err_size, "store: cannot lock %s: %s", path, strerror(e));
            *rc = AM2Z_EIO;
        }
        close(fd);
        return -1;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        /* the pid only makes the message of a refused second broker
           friendlier; the lock holds without it */
    }
    return fd;
}

int
am2z_store_open(const am2z_config_t *cfg, am2z_store_t **out,
                char *err, size_t err_size)
{
    if (out)
        *out = NULL;
    if (!cfg || !out || cfg->data_dir[0] == '\0' || cfg->map_size == 0
        || memchr(cfg->data_dir, '\0', sizeof cfg->data_dir) == NULL) {
        am2z_errbuf(err, err_size, "store: data_dir and map_size are required");
        return AM2Z_EINVAL;
    }
    if (s_mkdir_p(cfg->data_dir) != 0) {
        am2z_errbuf(err, err_size, "store: cannot create %s: %s", cfg->data_dir,
              strerror(errno));
        return AM2Z_EIO;
    }

    int rc = AM2Z_EIO;
    MDB_txn *txn = NULL;
    am2z_store_t *self = calloc(1, sizeof *self);
    if (!self) {
        am2z_errbuf(err, err_size, "store: out of memory");
        return AM2Z_ENOMEM;
    }
    snprintf(self->path, sizeof self->path, "%s", cfg->data_dir);
    self->fd = -1;
    self->lock_fd = -1;
    self->efd = -1;
    if (cfg->exclusive && (self->lock_fd = s_lock_dir(self->path, err, err_size, &rc)) < 0) {
        free(self);
        return rc;
    }
    self->durability = cfg->durability;
    self->flush_interval_ms = cfg->flush_interval_ms;
    self->max_state_size = cfg->max_state_size;
    self->max_sessions = cfg->max_sessions;
    self->batch.store = self;

    /*  LMDB wants the map a multiple of the OS page size. */
    long page = sysconf(_SC_PAGESIZE);
    uint64_t psz = page > 0 ? (uint64_t)page : 4096u;
    self->map_size = (cfg->map_size + psz - 1) / psz * psz;

    unsigned flags = MDB_NOTLS;
    if (cfg->durability == AM2Z_DURABILITY_PERIODIC)
        flags |= MDB_NOSYNC | (cfg->embedded ? 0 : MDB_WRITEMAP);

    int mrc = mdb_env_create(&self->env);
    if (mrc != 0) {
        self->env = NULL;
        am2z_errbuf(err, err_size, "store: mdb_env_create: %s", mdb_strerror(mrc));
        rc = mrc == ENOMEM ? AM2Z_ENOMEM : AM2Z_EIO;
        goto fail;
    }
    MDB_dbi ndbs = AM2Z_DB_COUNT_ + (MDB_dbi)(sizeof s_retired_dbs / sizeof s_retired_dbs[0]);
    if ((mrc = mdb_env_set_maxdbs(self->env, ndbs + 2)) != 0
        || (mrc = mdb_env_set_mapsize(self->env, (size_t)self->map_size)) != 0) {
        am2z_errbuf(err, err_size, "store: %s: cannot configure environment: %s",
              self->path, mdb_strerror(mrc));
        goto fail;
    }
    if ((mrc = mdb_env_open(self->env, self->path, flags, 0644)) != 0) {
        am2z_errbuf(err, err_size, "store: %s: cannot open LMDB environment: %s",
              self->path, mdb_strerror(mrc));
        rc = mrc == ENOMEM ? AM2Z_ENOMEM : AM2Z_EIO;
        goto fail;
    }

    /*  LMDB silently grows the map to fit the data already in the file; a
        configured size below that is a limit the operator should hear of. */
    MDB_envinfo info;
    MDB_stat est;
    mdb_env_info(self->env, &info);
    mdb_env_stat(self->env, &est);
    uint64_t used = ((uint64_t)info.me_last_pgno + 1) * est.ms_psize;
    if (used > self->map_size) {
        am2z_errbuf(err, err_size,
              "store: %s: existing data needs %llu bytes but map-size is %llu",
              self->path, (unsigned long long)used,
              (unsigned long long)self->map_size);
        rc = AM2Z_ERESOURCE;
        goto fail;
    }
    self->page_size = est.ms_psize;
    if (mdb_env_get_fd(self->env, &self->fd) != 0)
        self->fd = -1;
    /*  A full disk does not stop an existing store from opening: the pages
        LMDB wrote are allocated, so reads work and every write fails with
        the resource error until space is freed. Only creating a missing
        database needs new blocks, and then the open fails by name. */
    int alloc_err = s_allocate(self, used + S_COMMIT_SLACK);
    if (alloc_err != 0)
        self->alloc_end = used;
    self->max_key = (size_t)mdb_env_get_maxkeysize(self->env);

    if ((mrc = mdb_txn_begin(self->env, NULL, 0, &txn)) != 0) {
        am2z_errbuf(err, err_size, "store: %s: mdb_txn_begin: %s", self->path,
              mdb_strerror(mrc));
        rc = s_fail_code(mrc);
        goto fail;
    }
    for (int i = 0; i < AM2Z_DB_COUNT_; i++) {
        mrc = mdb_dbi_open(txn, s_db_names[i], alloc_err ? 0 : MDB_CREATE, &self->dbi[i]);
        if (mrc == MDB_NOTFOUND && alloc_err) {
            am2z_errbuf(err, err_size, "store: %s: cannot allocate disk blocks for data.mdb "
                        "(database %s is still to be created): %s",
                        self->path, s_db_names[i], strerror(alloc_err));
            rc = s_write_error(alloc_err);
            goto fail;
        }
        if (mrc != 0) {
            am2z_errbuf(err, err_size, "store: %s: cannot open database %s: %s",
                  self->path, s_db_names[i], mdb_strerror(mrc));
            rc = s_fail_code(mrc);
            goto fail;
        }
    }
    mrc = mdb_txn_commit(txn);
    txn = NULL;
    if (mrc != 0) {
        am2z_errbuf(err, err_size, "store: %s: cannot create databases: %s",
              self->path, mdb_strerror(mrc));
        rc = s_fail_code(mrc);
        goto fail;
    }
    s_drop_retired(self);
    *out = self;
    return AM2Z_OK;

fail:
    if (txn)
        mdb_txn_abort(txn);
    if (self->env)
        mdb_env_close(self->env);
    if (self->lock_fd >= 0)
        close(self->lock_fd);
    free(self);
    return rc;
}

/*  Drops the databases of s_retired_dbs that the file has, in a txn of
    its own after the open's. Best effort: one that cannot be dropped now
    (a full disk) stays, unused, and goes at a later open. */
static void
s_drop_retired(am2z_store_t *self)
{
    for (size_t i = 0; i < sizeof s_retired_dbs / sizeof s_retired_dbs[0]; i++) {
        MDB_txn *txn;
        MDB_dbi dbi;
        MDB_stat st;
        if (mdb_txn_begin(self->env, NULL, 0, &txn) != 0)
            return;
        if (mdb_dbi_open(txn, s_retired_dbs[i], 0, &dbi) != 0 || mdb_stat(txn, dbi, &st) != 0
            || mdb_drop(txn, dbi, 1) != 0) {
            mdb_txn_abort(txn);          /* not there (the usual case), or not now */
            continue;
        }
        if (mdb_txn_commit(txn) == 0)    /* frees txn either way */
            self->retired_entries += st.ms_entries;
    }
}

void
am2z_store_destroy(am2z_store_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_store_t *self = *self_p;
    am2z_store_batch_t *batch = self->batch.open ? &self->batch : NULL;
    am2z_store_abort(&batch);
    if (self->piped)
        s_pipeline_stop(self);
    while (self->nspare)
        am2z_wset_destroy(&self->spare[--self->nspare]);
    if (self->rtxn)
        mdb_txn_abort(self->rtxn);
    if (self->unsynced_commits > 0 || self->durable_txn != self->committed_txn)
        mdb_env_sync(self->env, 1);
    mdb_env_close(self->env);
    if (self->lock_fd >= 0)
        close(self->lock_fd);             /* after the env: the lock outlives every write */
    free(self);
    *self_p = NULL;
}

/* ---------------------------------------------------------------------------
   Keys and read txns
   ------------------------------------------------------------------------ */

static bool
s_key_ok(const am2z_store_t *self, const void *key, size_t key_size)
{
    return key && key_size > 0 && key_size <= self->max_key;
}

static bool
s_session_ok(const char *session_id)
{
    return session_id && am2z_session_id_valid(session_id, strlen(session_id));
}

static bool
s_db_ok(am2z_db_t db)
{
    return (int)db >= 0 && db < AM2Z_DB_COUNT_;
}

/* ---------------------------------------------------------------------------
   Writer thread (am2z_store_pipeline; sync mode).

   A staged batch records its writes in a write set (am2z_wset) instead of
   an LMDB txn. Its commit hands the set to the writer thread, which
   applies every set waiting into one LMDB write txn and commits it (its
   fdatasync included) while the caller goes on with its next batch. The
   caller reads through the sets still in flight: a lookup asks its own
   batch's set, then the in-flight sets newest first, then an LMDB read
   snapshot; a walk merges them in key order. The writer publishes w_applied
   (the last seq in LMDB) after its commit returns, and the caller loads it
   before it renews its snapshot, so every set at or below it is in the
   snapshot and is skipped; a set above it that the snapshot already holds
   is read twice, which gives the same answer (sets apply in order, and the
   newest layer wins). Settled sets are freed between reads, never while a
   walk hands out pointers into them.

   LMDB's writer lock is taken and released by the thread that commits, so
   no txn crosses threads. MDB_NOMETASYNC as with am2z_store_defer_meta: a
   commit's data flush makes the previous commit durable, and the writer
   flushes again when it has nothing left to apply, so w_durable reaches
   w_applied whenever the caller stops handing over sets.

   Errors. Everything that can refuse a write is decided when the caller
   writes, as in direct mode: a full disk through the blocks allocated
   ahead (s_reserve), a full map because the batch turns direct (a real
   LMDB txn on the caller's thread, after the writer drained) when its
   bound could reach past the map. What the writer can still meet is an I/O
   error (fdatasync or pwrite: EIO) or a bound that proved wrong; either is
   sticky, no later set is applied, and am2z_store_poll() returns it: the
   caller must stop answering (like PostgreSQL after a failed fsync, the
   file's state is known only up to w_durable) and restart.
   ------------------------------------------------------------------------ */

static void
s_stage_free(s_stage_t *st)
{
    if (st) {
        am2z_wset_destroy(&st->ws);
        free(st);
    }
}

/*  Writer side: tells the caller something moved (under mu). */
static void
s_signal(am2z_store_t *self)
{
    uint64_t one = 1;
    pthread_cond_broadcast(&self->progress);
    if (self->efd >= 0 && write(self->efd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is already non-zero, the caller will look */
    }
}

/*  Replays a write set's operations, in order, into txn. Returns 0 or the
    LMDB code of the first that failed. */
static int
s_replay(am2z_store_t *self, MDB_txn *txn, const am2z_wset_t *ws)
{
    int mrc = 0;
    size_t n = am2z_wset_size(ws);
    for (size_t i = 0; i < n && mrc == 0; i++) {
        const am2z_wop_t *op = am2z_wset_op(ws, i);
        MDB_val k = { op->key_size, (void *)op->key };
        if (op->del) {
            mrc = mdb_del(txn, self->dbi[op->db], &k, NULL);
            if (mrc == MDB_NOTFOUND)
                mrc = 0;
        } else {
            MDB_val v = { op->val_size, (void *)op->val };
            mrc = mdb_put(txn, self->dbi[op->db], &k, &v, 0);
        }
    }
    return mrc;
}

/*  Applies the sets from first (linked by wnext) in one LMDB txn.
    Returns 0 or the LMDB / errno code. */
static int
s_apply(am2z_store_t *self, s_stage_t *first)
{
    MDB_txn *txn;
    int mrc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (mrc != 0)
        return mrc;
    for (s_stage_t *st = first; st && mrc == 0; st = st->wnext)
        mrc = s_replay(self, txn, st->ws);
    if (mrc != 0) {
        mdb_txn_abort(txn);
        return mrc;
    }
    return mdb_txn_commit(txn);
}

static void *
s_writer(void *arg)
{
    am2z_store_t *self = arg;
    uint64_t applied = __atomic_load_n(&self->w_applied, __ATOMIC_RELAXED);
    uint64_t durable = applied;
    pthread_mutex_lock(&self->mu);
    for (;;) {
        if (self->w_error) {
            /* nothing more reaches the file; drop what is handed over */
            self->q_head = self->q_tail = NULL;
            if (self->stop)
                break;
            pthread_cond_wait(&self->wake, &self->mu);
            continue;
        }
        if (!self->q_head) {
            if (durable < applied) {
                pthread_mutex_unlock(&self->mu);
                int mrc = mdb_env_sync(self->env, 1);
                pthread_mutex_lock(&self->mu);
                if (mrc != 0) {
                    self->w_error = mrc;
                } else {
                    durable = applied;
                    __atomic_store_n(&self->w_durable, durable, __ATOMIC_RELEASE);
                    self->syncs++;
                }
                s_signal(self);
                continue;
            }
            if (self->stop)
                break;
            pthread_cond_wait(&self->wake, &self->mu);
            continue;
        }
        s_stage_t *first = self->q_head, *last = self->q_tail;
        self->q_head = self->q_tail = NULL;
        pthread_mutex_unlock(&self->mu);
        int mrc = s_apply(self, first);
        pthread_mutex_lock(&self->mu);
        if (mrc != 0) {
            self->w_error = mrc;
        } else {
            /* its data flush put the previous commit's meta page on disk */
            self->w_sets += last->seq - applied;
            self->w_commits++;
            durable = applied;
            applied = last->seq;
            __atomic_store_n(&self->w_applied, applied, __ATOMIC_RELEASE);
            __atomic_store_n(&self->w_durable, durable, __ATOMIC_RELEASE);
        }
        s_signal(self);
    }
    pthread_mutex_unlock(&self->mu);
    return NULL;
}

/*  Caller side: frees the in-flight sets the writer has committed, unless
    a walk may still point into them. */
static void
s_settle(am2z_store_t *self, uint64_t applied)
{
    if (self->walks)
        return;
    if (self->snap_held && applied > self->snap_from)
        applied = self->snap_from;    /* the held snapshot reads the rest through them */
    while (self->fl_head && self->fl_head->seq <= applied) {
        s_stage_t *st = self->fl_head;
        self->fl_head = st->next;
        if (self->fl_head)
            self->fl_head->prev = NULL;
        else
            self->fl_tail = NULL;
        if (self->nspare < S_SPARE_SETS) {   /* recycled: no malloc per turn */
            am2z_wset_clear(st->ws);
            self->spare[self->nspare++] = st->ws;
            st->ws = NULL;
        }
        s_stage_free(st);
    }
}

/*  Caller side: the writer's sticky failure as a store code, or AM2Z_OK. */
static int
s_writer_failure(am2z_store_t *self)
{
    pthread_mutex_lock(&self->mu);
    int e = self->w_error;
    pthread_mutex_unlock(&self->mu);
    return e ? s_fail_code(e) : AM2Z_OK;
}

/*  Caller side: waits until the writer has applied (durable: and flushed)
    every set handed over. Returns AM2Z_OK or the writer's failure. */
static int
s_wait_writer_for(am2z_store_t *self, bool durable, uint64_t target)
{
    uint64_t *what = durable ? &self->w_durable : &self->w_applied;
    pthread_mutex_lock(&self->mu);
    while (!self->w_error && __atomic_load_n(what, __ATOMIC_ACQUIRE) < target)
        pthread_cond_wait(&self->progress, &self->mu);
    pthread_mutex_unlock(&self->mu);
    s_settle(self, __atomic_load_n(&self->w_applied, __ATOMIC_ACQUIRE));
    return s_writer_failure(self);
}

static int
s_wait_writer(am2z_store_t *self, bool durable)
{
    return s_wait_writer_for(self, durable, self->committed_txn);
}

/*  Starts a read txn: the cached one when idle, a fresh one when it is
    busy (a read from inside an am2z_store_each callback). With the writer
    thread, *from (may be NULL) gets the seq the snapshot holds at least:
    in-flight sets above it are to be read through. */
static int
s_read_begin_from(am2z_store_t *self, MDB_txn **txn, uint64_t *from)
{
    int rc;
    uint64_t applied = 0;
    if (self->snap_held) {
        /* the writer committed since the snapshot was taken: move it on
           (outside walks, which hand out pointers into it), so it does not
           keep the writer from reusing the pages that commit freed */
        uint64_t now = __atomic_load_n(&self->w_applied, __ATOMIC_ACQUIRE);
        if (now > self->snap_from && !self->walks) {
            mdb_txn_reset(self->rtxn);
            if (mdb_txn_renew(self->rtxn) != 0) {
                mdb_txn_abort(self->rtxn);
                self->rtxn = NULL;
                self->rtxn_busy = self->snap_held = false;
                return AM2Z_EIO;
            }
            self->snap_from = now;
            s_settle(self, now);
        }
        *txn = self->rtxn;
        if (from)
            *from = self->snap_from;
        return AM2Z_OK;
    }
    if (self->piped) {
        applied = __atomic_load_n(&self->w_applied, __ATOMIC_ACQUIRE);
        s_settle(self, applied);
    }
    if (from)
        *from = applied;
    if (self->rtxn && !self->rtxn_busy) {
        rc = mdb_txn_renew(self->rtxn);
        if (rc != 0) {
            mdb_txn_abort(self->rtxn);
            self->rtxn = NULL;
            return AM2Z_EIO;
        }
        self->rtxn_busy = true;
        *txn = self->rtxn;
        return AM2Z_OK;
    }
    rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, txn);
    if (rc != 0)
        return rc == ENOMEM ? AM2Z_ENOMEM : AM2Z_EIO;
    if (!self->rtxn) {
        self->rtxn = *txn;
        self->rtxn_busy = true;
    }
    return AM2Z_OK;
}

static int
s_read_begin(am2z_store_t *self, MDB_txn **txn)
{
    return s_read_begin_from(self, txn, NULL);
}

/*  The value of key in db as the caller sees it: ws (its open batch's set,
    may be NULL), the in-flight sets above from, newest first, then txn.
    Returns 0 (*v set, borrowed), MDB_NOTFOUND or an LMDB error. */
static int
s_view_get(am2z_store_t *self, am2z_wset_t *ws, uint64_t from, MDB_txn *txn,
           am2z_db_t db, const void *key, size_t key_size, MDB_val *v)
{
    const am2z_wop_t *op = NULL;
    am2z_wset_hit_t hit = AM2Z_WSET_ABSENT;
    if (ws || (self->fl_tail && self->fl_tail->seq > from)) {   /* (none: skip the hash) */
        uint64_t h = am2z_wset_hash((unsigned)db, key, key_size);
        hit = am2z_wset_get_h(ws, (unsigned)db, key, key_size, h, &op);
        for (s_stage_t *st = self->fl_tail; !hit && st && st->seq > from; st = st->prev)
            hit = am2z_wset_get_h(st->ws, (unsigned)db, key, key_size, h, &op);
    }
    if (hit == AM2Z_WSET_DELETED)
        return MDB_NOTFOUND;
    if (hit == AM2Z_WSET_PUT) {
        v->mv_size = op->val_size;
        v->mv_data = (void *)op->val;
        return 0;
    }
    MDB_val k = { key_size, (void *)key };
    return mdb_get(txn, self->dbi[db], &k, v);
}

/*  A walk over db from start, merging ws, the in-flight sets above from
    and the cursor cur (positioned by the caller) in key order; the newest
    layer wins a key and a delete hides it. Returns like am2z_store_each. */
static int
s_view_walk(am2z_store_t *self, am2z_wset_t *ws, uint64_t from, MDB_cursor *cur,
            am2z_db_t db, const void *start, size_t start_size,
            am2z_store_each_fn *fn, void *arg)
{
    enum { MAXL = 64 };
    const am2z_wop_t *const *lv[MAXL];
    size_t ln[MAXL], lp[MAXL];
    size_t nl = 0;
    am2z_wset_t *sets[MAXL];
    if (ws)
        sets[nl++] = ws;
    for (s_stage_t *st = self->fl_tail; st && st->seq > from; st = st->prev) {
        if (nl == MAXL)
            return AM2Z_ENOMEM;       /* never: S_INFLIGHT_MAX bounds them */
        sets[nl++] = st->ws;
    }
    for (size_t i = 0; i < nl; i++) {
        ln[i] = am2z_wset_sorted(sets[i], (unsigned)db, &lv[i]);
        size_t lo = 0, hi = ln[i];
        while (start && lo < hi) {    /* first key >= start */
            size_t mid = (lo + hi) / 2;
            if (am2z_wset_keycmp(lv[i][mid]->key, lv[i][mid]->key_size, start, start_size) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        lp[i] = lo;
    }
    MDB_val k = { start_size, (void *)start }, v;
    int mrc = mdb_cursor_get(cur, &k, &v, start ? MDB_SET_RANGE : MDB_FIRST);
    int rc = AM2Z_OK;
    self->walks++;
    for (;;) {
        if (mrc != 0 && mrc != MDB_NOTFOUND) {
            rc = AM2Z_EIO;
            break;
        }
        /* the smallest key among the layers' heads and the cursor */
        const void *mk = NULL;
        size_t ms = 0;
        int win = -1;                 /* layer that wins it, -1: the cursor */
        bool any = false;
        for (size_t i = 0; i < nl; i++) {
            if (lp[i] == ln[i])
                continue;
            const am2z_wop_t *op = lv[i][lp[i]];
            if (!any || am2z_wset_keycmp(op->key, op->key_size, mk, ms) < 0) {
                mk = op->key;
                ms = op->key_size;
                win = (int)i;
                any = true;
            }
        }
        if (mrc == 0 && (!any || am2z_wset_keycmp(k.mv_data, k.mv_size, mk, ms) < 0)) {
            mk = k.mv_data;
            ms = k.mv_size;
            win = -1;
            any = true;
        }
        if (!any)
            break;
        /* call fn before moving on: mk points into the winner */
        if (win < 0) {
            rc = fn(k.mv_data, k.mv_size, v.mv_data, v.mv_size, arg);
        } else {
            const am2z_wop_t *op = lv[win][lp[win]];
            rc = op->del ? 0 : fn(op->key, op->key_size, op->val, op->val_size, arg);
        }
        if (rc != 0)
            break;
        /* step every source past this key (the winner's op stays alive) */
        const am2z_wop_t *wop = win >= 0 ? lv[win][lp[win]] : NULL;
        const void *key = wop ? (const void *)wop->key : mk;
        size_t key_size = wop ? wop->key_size : ms;
        uint8_t kbuf[512];
        if (!wop) {
            /* the cursor's key moves with it: keep a copy */
            if (ms > sizeof kbuf) {
                rc = AM2Z_EIO;
                break;
            }
            memcpy(kbuf, mk, ms);
            key = kbuf;
        }
        for (size_t i = 0; i < nl; i++)
            if (lp[i] < ln[i]
                && am2z_wset_keycmp(lv[i][lp[i]]->key, lv[i][lp[i]]->key_size, key, key_size) == 0)
                lp[i]++;
        if (mrc == 0 && am2z_wset_keycmp(k.mv_data, k.mv_size, key, key_size) == 0)
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    self->walks--;
    return rc;
}

static void
s_read_end(am2z_store_t *self, MDB_txn *txn)
{
    if (txn == self->rtxn && self->snap_held)
        return;                       /* released when its batch ends */
    if (txn == self->rtxn) {
        mdb_txn_reset(txn);
        self->rtxn_busy = false;
    } else {
        mdb_txn_abort(txn);
    }
}

/*  Verifies the envelope in val and copies it out into rec. */
static int
s_unseal(const MDB_val *val, am2z_record_t *rec)
{
    am2z_envelope_t env;
    int rc = am2z_envelope_decode(val->mv_data, val->mv_size, &env);
    if (rc != AM2Z_OK)
        return rc;
    /*  malloc(0) may return NULL; an empty payload still gets a buffer so
        data == NULL never means success. */
    uint8_t *copy = malloc(env.payload_size ? env.payload_size : 1);
    if (!copy)
        return AM2Z_ENOMEM;
    if (env.payload_size)
        memcpy(copy, env.payload, env.payload_size);
    rec->version = env.version;
    rec->created_ms = env.created_ms;
    rec->updated_ms = env.updated_ms;
    rec->data = copy;
    rec->size = env.payload_size;
    return AM2Z_OK;
}

/* ---------------------------------------------------------------------------
   Batches
   ------------------------------------------------------------------------ */

/*  Where the file may reach once everything handed over and the open batch
    are in (staged mode): the writer's last commit, plus the growth bound of
    the sets it has not committed yet. */
static uint64_t
s_staged_base(am2z_store_t *self)
{
    uint64_t applied = __atomic_load_n(&self->w_applied, __ATOMIC_ACQUIRE);
    MDB_envinfo info;
    mdb_env_info(self->env, &info);
    uint64_t base = ((uint64_t)info.me_last_pgno + 1) * self->page_size + S_COMMIT_SLACK;
    for (s_stage_t *st = self->fl_head; st; st = st->next)
        if (st->seq > applied)
            base += st->growth;
    return base;
}

int
am2z_store_begin(am2z_store_t *self, am2z_store_batch_t **out)
{
    if (!self || !out)
        return AM2Z_EINVAL;
    *out = NULL;
    if (self->batch.open)
        return AM2Z_ESTATE;
    am2z_store_batch_t *b = &self->batch;
    b->growth = 0;
    b->sessions_delta = 0;
    if (self->piped) {
        if (s_writer_failure(self) != AM2Z_OK)
            return AM2Z_EIO;
        s_settle(self, __atomic_load_n(&self->w_applied, __ATOMIC_ACQUIRE));
        b->ws = self->nspare ? self->spare[--self->nspare] : am2z_wset_new();
        if (!b->ws)
            return AM2Z_ENOMEM;
        /* one snapshot for the whole batch: its reads skip renewing a
           read txn each (held for a turn, it pins no page for long) */
        if (!self->rtxn_busy) {       /* (busy: begun inside a walk; reads renew) */
            MDB_txn *rtxn;
            uint64_t from;
            if (s_read_begin_from(self, &rtxn, &from) != AM2Z_OK) {
                am2z_wset_destroy(&b->ws);
                return AM2Z_EIO;
            }
            if (rtxn == self->rtxn) {
                self->snap_held = true;
                self->snap_from = from;
            } else {
                s_read_end(self, rtxn);
            }
        }
        b->open = true;
        b->poison = 0;
        b->bound = s_staged_base(self);
        *out = b;
        return AM2Z_OK;
    }
    int mrc = mdb_txn_begin(self->env, NULL, 0, &b->txn);
    if (mrc != 0) {
        b->txn = NULL;
        return s_write_error(mrc) == AM2Z_ENOMEM ? AM2Z_ENOMEM : AM2Z_EIO;
    }
    b->open = true;
    b->poison = 0;
    MDB_envinfo info;
    mdb_env_info(self->env, &info);
    b->bound = ((uint64_t)info.me_last_pgno + 1) * self->page_size + S_COMMIT_SLACK;
    *out = b;
    return AM2Z_OK;
}

/*  Records a failed write: an LMDB txn is dead, so abort it now (a staged
    batch drops its set) and make every later call of this batch return
    the same code. */
static int
s_poison(am2z_store_batch_t *batch, int mrc)
{
    batch->store->last_write_error = mrc;
    batch->poison = s_write_error(mrc);
    if (batch->txn) {
        mdb_txn_abort(batch->txn);
        batch->txn = NULL;
    }
    am2z_wset_destroy(&batch->ws);
    return batch->poison;
}

/*  A staged batch whose bound could reach past the map turns direct, so
    that LMDB tells a full map at the write that fills it: the writer
    drains, then the set is replayed into a txn on this thread. */
static int
s_go_direct(am2z_store_batch_t *batch)
{
    am2z_store_t *self = batch->store;
    int rc = s_wait_writer(self, false);
    if (rc != AM2Z_OK) {
        batch->poison = rc;
        am2z_wset_destroy(&batch->ws);
        return rc;
    }
    int mrc = mdb_txn_begin(self->env, NULL, 0, &batch->txn);
    if (mrc != 0) {
        batch->txn = NULL;
        return s_poison(batch, mrc);
    }
    mrc = s_replay(self, batch->txn, batch->ws);
    if (mrc != 0)
        return s_poison(batch, mrc);
    am2z_wset_destroy(&batch->ws);
    MDB_envinfo info;
    mdb_env_info(self->env, &info);
    batch->bound = ((uint64_t)info.me_last_pgno + 1) * self->page_size + S_COMMIT_SLACK
                   + batch->growth;
    return AM2Z_OK;
}

/*  Before a write of size bytes: the file blocks it may touch are
    allocated, or the batch fails with a resource error (disk full). */
static int
s_reserve(am2z_store_batch_t *batch, size_t size)
{
    am2z_store_t *self = batch->store;
    uint64_t add = size + (uint64_t)S_WRITE_PAGES * self->page_size;
    batch->bound += add;
    batch->growth += add;
    if (batch->ws && batch->bound > self->map_size) {
        int rc = s_go_direct(batch);
        if (rc != AM2Z_OK)
            return rc;
    }
    int e = s_allocate(self, batch->bound);
    return e == 0 ? AM2Z_OK : s_poison(batch, e);
}

/*  Common entry check of batch operations. */
static int
s_batch_usable(const am2z_store_batch_t *batch)
{
    if (!batch || !batch->open)
        return AM2Z_ESTATE;
    if (batch->poison)
        return batch->poison;
    return AM2Z_OK;
}

static void
s_batch_close(am2z_store_batch_t *batch)
{
    am2z_store_t *self = batch->store;
    if (self->snap_held) {
        self->snap_held = false;
        s_read_end(self, self->rtxn);
    }
    batch->txn = NULL;
    am2z_wset_destroy(&batch->ws);
    batch->open = false;
    batch->poison = 0;
}

static void
s_note_commit(am2z_store_t *self)
{
    if (self->durability != AM2Z_DURABILITY_PERIODIC)
        return;
    if (self->unsynced_commits++ == 0)
        self->unsynced_since_ms = am2z_store_now_ms();
}

/*  Hands a staged batch's set to the writer. */
static int
s_hand_over(am2z_store_batch_t *batch)
{
    am2z_store_t *self = batch->store;
    if (am2z_wset_size(batch->ws) == 0)
        return AM2Z_OK;               /* wrote nothing: no commit */
    s_stage_t *st = calloc(1, sizeof *st);
    if (!st)
        return AM2Z_ENOMEM;
    st->ws = batch->ws;
    batch->ws = NULL;
    st->seq = self->committed_txn + 1;
    st->growth = batch->growth;
    st->prev = self->fl_tail;
    if (self->fl_tail)
        self->fl_tail->next = st;
    else
        self->fl_head = st;
    self->fl_tail = st;
    self->committed_txn = st->seq;
    self->sessions_n += batch->sessions_delta;
    pthread_mutex_lock(&self->mu);
    if (self->q_tail)
        self->q_tail->wnext = st;
    else
        self->q_head = st;
    self->q_tail = st;
    pthread_cond_signal(&self->wake);
    pthread_mutex_unlock(&self->mu);
    /* back-pressure: a reader asks every set in flight, so their number
       stays bounded (the writer takes all of them in its next txn) */
    if (st->seq - __atomic_load_n(&self->w_applied, __ATOMIC_ACQUIRE) > S_INFLIGHT_MAX)
        s_wait_writer_for(self, false, st->seq - S_INFLIGHT_MAX / 2);
    return AM2Z_OK;
}

/*  Commits a batch that turned direct (staged mode, near a full map) on
    this thread, and makes it durable at once: the writer is idle. */
static int
s_commit_direct_piped(am2z_store_batch_t *batch)
{
    am2z_store_t *self = batch->store;
    MDB_envinfo before, after;
    mdb_env_info(self->env, &before);
    int mrc = mdb_txn_commit(batch->txn);   /* frees the txn either way */
    batch->txn = NULL;
    if (mrc == 0) {
        mdb_env_info(self->env, &after);
        if (after.me_last_txnid == before.me_last_txnid)
            return AM2Z_OK;
        mrc = mdb_env_sync(self->env, 1);
    }
    if (mrc != 0) {
        self->last_write_error = mrc;
        return s_fail_code(mrc);
    }
    uint64_t seq = ++self->committed_txn;
    MDB_txn *rtxn;
    if (mdb_txn_begin(self->env, NULL, MDB_RDONLY, &rtxn) == 0) {
        MDB_stat st;
        if (mdb_stat(rtxn, self->dbi[AM2Z_DB_SESSIONS], &st) == 0)
            self->sessions_n = st.ms_entries;
        mdb_txn_abort(rtxn);
    }
    __atomic_store_n(&self->w_applied, seq, __ATOMIC_RELEASE);
    __atomic_store_n(&self->w_durable, seq, __ATOMIC_RELEASE);
    s_settle(self, seq);
    return AM2Z_OK;
}

int
am2z_store_commit(am2z_store_batch_t **batch_p)
{
    if (!batch_p || !*batch_p)
        return AM2Z_EINVAL;
    am2z_store_batch_t *batch = *batch_p;
    *batch_p = NULL;
    if (!batch->open)
        return AM2Z_ESTATE;
    int rc = batch->poison;
    if (rc == AM2Z_OK && batch->ws) {
        rc = s_hand_over(batch);
    } else if (rc == AM2Z_OK && batch->store->piped) {
        rc = s_commit_direct_piped(batch);
    } else if (rc == AM2Z_OK) {
        am2z_store_t *store = batch->store;
        MDB_envinfo before;
        if (store->defer_meta)
            mdb_env_info(store->env, &before);
        int mrc = mdb_txn_commit(batch->txn);   /* frees the txn either way */
        if (mrc != 0) {
            store->last_write_error = mrc;
            rc = s_fail_code(mrc);
        }
        else
            s_note_commit(store);
        if (store->defer_meta) {
            /* a commit that wrote (the last txn id moved) fdatasynced the
               file before writing its meta page: every earlier commit's
               meta is on disk now. One that failed before its meta write
               may have synced too, but nothing says so: durable stays. */
            MDB_envinfo after;
            mdb_env_info(store->env, &after);
            if (mrc == 0 && after.me_last_txnid != before.me_last_txnid) {
                store->durable_txn = (uint64_t)before.me_last_txnid;
                store->committed_txn = (uint64_t)after.me_last_txnid;
            }
        }
    }
    s_batch_close(batch);
    return rc;
}

void
am2z_store_abort(am2z_store_batch_t **batch_p)
{
    if (!batch_p || !*batch_p)
        return;
    am2z_store_batch_t *batch = *batch_p;
    *batch_p = NULL;
    if (!batch->open)
        return;
    if (batch->txn)
        mdb_txn_abort(batch->txn);
    s_batch_close(batch);
}

/*  Looks key up in db as the batch sees it (its own writes included).
    Returns 0 with *v set (valid until s_lookup_end), MDB_NOTFOUND, or
    another non-zero code (a read failure). */
static int
s_lookup(am2z_store_batch_t *batch, am2z_db_t db, const void *key, size_t key_size,
         MDB_val *v, MDB_txn **rtxn)
{
    am2z_store_t *self = batch->store;
    *rtxn = NULL;
    if (!batch->ws) {
        MDB_val k = { key_size, (void *)key };
        return mdb_get(batch->txn, self->dbi[db], &k, v);
    }
    uint64_t from;
    if (s_read_begin_from(self, rtxn, &from) != AM2Z_OK) {
        *rtxn = NULL;
        return EIO;
    }
    return s_view_get(self, batch->ws, from, *rtxn, db, key, key_size, v);
}

static void
s_lookup_end(am2z_store_t *self, MDB_txn *rtxn)
{
    if (rtxn)
        s_read_end(self, rtxn);
}

/*  Writes value (already sealed for sealed dbs) under key: into the set
    (staged) or the txn. */
static int
s_write(am2z_store_batch_t *batch, am2z_db_t db, const void *key, size_t key_size,
        const void *value, size_t value_size)
{
    if (batch->ws)
        return am2z_wset_put(batch->ws, (unsigned)db, key, key_size, value, value_size) == 0
               ? AM2Z_OK : s_poison(batch, ENOMEM);
    MDB_val k = { key_size, (void *)key };
    MDB_val v = { value_size, (void *)value };
    int mrc = mdb_put(batch->txn, batch->store->dbi[db], &k, &v, 0);
    return mrc == 0 ? AM2Z_OK : s_poison(batch, mrc);
}

/*  Seals and writes one envelope under key. */
static int
s_put_sealed(am2z_store_batch_t *batch, am2z_db_t db, const void *key,
             size_t key_size, uint64_t version, uint64_t created_ms,
             uint64_t updated_ms, const uint8_t *data, size_t size)
{
    /* the usual record (a state, a job, a result: hundreds of bytes) is
       sealed on the stack, s_write copying it where it goes */
    uint8_t local[4096];
    size_t cap = am2z_envelope_size_max(size);
    uint8_t *sealed = cap <= sizeof local ? local : malloc(cap);
    if (!sealed)
        return AM2Z_ENOMEM;
    size_t sealed_size = 0;
    int rc = am2z_envelope_encode_to(version, created_ms, updated_ms, data, size, sealed, cap,
                                     &sealed_size);
    if (rc == AM2Z_OK)
        rc = s_reserve(batch, key_size + sealed_size);
    if (rc == AM2Z_OK)
        rc = s_write(batch, db, key, key_size, sealed, sealed_size);
    if (sealed != local)
        free(sealed);
    return rc;
}

int
am2z_batch_put_state(am2z_store_batch_t *batch, const char *session_id,
                     uint64_t expected_version, uint64_t new_version,
                     const uint8_t *state, size_t state_size, uint64_t now_ms)
{
    int rc = s_batch_usable(batch);
    if (rc != AM2Z_OK)
        return rc;
    am2z_store_t *self = batch->store;
    if (!s_session_ok(session_id) || new_version <= expected_version
        || (!state && state_size > 0))
        return AM2Z_EINVAL;
    if (self->max_state_size && state_size > self->max_state_size)
        return AM2Z_ERESOURCE;
    size_t klen = strlen(session_id);
    MDB_val v;
    MDB_txn *rtxn;
    uint64_t created_ms = now_ms;
    int mrc = s_lookup(batch, AM2Z_DB_SESSIONS, session_id, klen, &v, &rtxn);
    bool fresh = false;
    if (mrc == MDB_NOTFOUND) {
        fresh = true;
        if (expected_version != 0) {
            rc = AM2Z_ECONFLICT;
        } else if (self->max_sessions && batch->ws) {
            if (self->sessions_n + (uint64_t)batch->sessions_delta >= self->max_sessions)
                rc = AM2Z_ERESOURCE;
        } else if (self->max_sessions) {
            MDB_stat st;
            if (mdb_stat(batch->txn, self->dbi[AM2Z_DB_SESSIONS], &st) != 0)
                rc = AM2Z_EIO;
            else if (st.ms_entries >= self->max_sessions)
                rc = AM2Z_ERESOURCE;
        }
    } else if (mrc == 0) {
        am2z_envelope_t env;
        rc = am2z_envelope_decode(v.mv_data, v.mv_size, &env);
        if (rc == AM2Z_OK && (expected_version == 0 || env.version != expected_version))
            rc = AM2Z_ECONFLICT;
        created_ms = env.created_ms;
    } else {
        rc = AM2Z_EIO;
    }
    s_lookup_end(self, rtxn);
    if (rc != AM2Z_OK)
        return rc;
    bool staged = batch->ws != NULL;
    rc = s_put_sealed(batch, AM2Z_DB_SESSIONS, session_id, klen, new_version,
                      created_ms, now_ms, state, state_size);
    if (rc == AM2Z_OK && fresh && staged)
        batch->sessions_delta++;
    return rc;
}

/*  Deletes key from db. */
static int
s_del(am2z_store_batch_t *batch, am2z_db_t db, const void *key, size_t key_size)
{
    int rc = s_reserve(batch, key_size);
    if (rc != AM2Z_OK)
        return rc;
    if (batch->ws) {
        MDB_val v;
        MDB_txn *rtxn;
        int mrc = s_lookup(batch, db, key, key_size, &v, &rtxn);
        s_lookup_end(batch->store, rtxn);
        if (mrc == MDB_NOTFOUND)
            return AM2Z_ENOTFOUND;
        if (mrc != 0)
            return AM2Z_EIO;
        if (am2z_wset_del(batch->ws, (unsigned)db, key, key_size) != 0)
            return s_poison(batch, ENOMEM);
        if (db == AM2Z_DB_SESSIONS)
            batch->sessions_delta--;
        return AM2Z_OK;
    }
    MDB_val k = { key_size, (void *)key };
    int mrc = mdb_del(batch->txn, batch->store->dbi[db], &k, NULL);
    if (mrc == MDB_NOTFOUND)
        return AM2Z_ENOTFOUND;
    return mrc == 0 ? AM2Z_OK : s_poison(batch, mrc);
}

int
am2z_batch_delete_state(am2z_store_batch_t *batch, const char *session_id)
{
    int rc = s_batch_usable(batch);
    if (rc != AM2Z_OK)
        return rc;
    if (!s_session_ok(session_id))
        return AM2Z_EINVAL;
    return s_del(batch, AM2Z_DB_SESSIONS, session_id, strlen(session_id));
}

int
am2z_batch_put_record(am2z_store_batch_t *batch, am2z_db_t db,
                      const void *key, size_t key_size, uint64_t version,
                      const uint8_t *data, size_t size, uint64_t now_ms)
{
    int rc = s_batch_usable(batch);
    if (rc != AM2Z_OK)
        return rc;
    am2z_store_t *self = batch->store;
    if (!s_db_ok(db) || !am2z_db_sealed(db) || !s_key_ok(self, key, key_size)
        || (!data && size > 0))
        return AM2Z_EINVAL;

    /*  Keep the first write's creation time across overwrites; a corrupt
        old value is simply replaced (this write is unconditional). */
    uint64_t created_ms = now_ms;
    MDB_val v;
    MDB_txn *rtxn;
    if (s_lookup(batch, db, key, key_size, &v, &rtxn) == 0) {
        am2z_envelope_t env;
        if (am2z_envelope_decode(v.mv_data, v.mv_size, &env) == AM2Z_OK)
            created_ms = env.created_ms;
    }
    s_lookup_end(self, rtxn);
    return s_put_sealed(batch, db, key, key_size, version, created_ms, now_ms,
                        data, size);
}

int
am2z_batch_put_record_at(am2z_store_batch_t *batch, am2z_db_t db,
                         const void *key, size_t key_size, uint64_t version,
                         const uint8_t *data, size_t size, uint64_t created_ms,
                         uint64_t now_ms)
{
    int rc = s_batch_usable(batch);
    if (rc != AM2Z_OK)
        return rc;
    if (!s_db_ok(db) || !am2z_db_sealed(db) || db == AM2Z_DB_SESSIONS
        || !s_key_ok(batch->store, key, key_size) || (!data && size > 0))
        return AM2Z_EINVAL;
    return s_put_sealed(batch, db, key, key_size, version, created_ms, now_ms,
                        data, size);
}

int
am2z_batch_put_raw(am2z_store_batch_t *batch, am2z_db_t db,
                   const void *key, size_t key_size,
                   const void *value, size_t value_size)
{
    int rc = s_batch_usable(batch);
    if (rc != AM2Z_OK)
        return rc;
    if (!s_db_ok(db) || am2z_db_sealed(db) || !s_key_ok(batch->store, key, key_size)
        || (!value && value_size > 0))
        return AM2Z_EINVAL;
    rc = s_reserve(batch, key_size + value_size);
    if (rc != AM2Z_OK)
        return rc;
    return s_write(batch, db, key, key_size, value, value_size);
}

int
am2z_batch_del(am2z_store_batch_t *batch, am2z_db_t db,
               const void *key, size_t key_size)
{
    int rc = s_batch_usable(batch);
    if (rc != AM2Z_OK)
        return rc;
    if (!s_db_ok(db) || !s_key_ok(batch->store, key, key_size))
        return AM2Z_EINVAL;
    return s_del(batch, db, key, key_size);
}

int
am2z_batch_del_any(am2z_store_batch_t *batch, am2z_db_t db,
                   const void *key, size_t key_size)
{
    int rc = s_batch_usable(batch);
    if (rc != AM2Z_OK)
        return rc;
    if (!s_db_ok(db) || db == AM2Z_DB_SESSIONS || !s_key_ok(batch->store, key, key_size))
        return AM2Z_EINVAL;
    if (!batch->ws) {
        rc = s_del(batch, db, key, key_size);
        return rc == AM2Z_ENOTFOUND ? AM2Z_OK : rc;
    }
    rc = s_reserve(batch, key_size);
    if (rc != AM2Z_OK)
        return rc;
    if (am2z_wset_del(batch->ws, (unsigned)db, key, key_size) != 0)
        return s_poison(batch, ENOMEM);
    return AM2Z_OK;
}

/*  Reads a sealed record as the batch sees it. */
static int
s_batch_get_sealed(am2z_store_batch_t *batch, am2z_db_t db, const void *key,
                   size_t key_size, am2z_record_t *rec)
{
    MDB_val v;
    MDB_txn *rtxn;
    int mrc = s_lookup(batch, db, key, key_size, &v, &rtxn);
    int rc = mrc == MDB_NOTFOUND ? AM2Z_ENOTFOUND : mrc != 0 ? AM2Z_EIO : s_unseal(&v, rec);
    s_lookup_end(batch->store, rtxn);
    return rc;
}

int
am2z_batch_get_state(am2z_store_batch_t *batch, const char *session_id,
                     am2z_record_t *rec)
{
    if (rec)
        memset(rec, 0, sizeof *rec);
    int rc = s_batch_usable(batch);
    if (rc != AM2Z_OK)
        return rc;
    if (!rec || !s_session_ok(session_id))
        return AM2Z_EINVAL;
    return s_batch_get_sealed(batch, AM2Z_DB_SESSIONS, session_id, strlen(session_id), rec);
}

bool
am2z_batch_state_pending(am2z_store_batch_t *batch, const char *session_id)
{
    if (s_batch_usable(batch) != AM2Z_OK || !s_session_ok(session_id))
        return batch && batch->open;   /* poisoned: nothing is settled */
    am2z_store_t *self = batch->store;
    size_t klen = strlen(session_id);
    MDB_val mine, theirs;
    MDB_txn *rtxn;
    int m1, m2;
    if (batch->ws) {
        const am2z_wop_t *op;
        am2z_wset_hit_t hit = am2z_wset_get(batch->ws, AM2Z_DB_SESSIONS, session_id, klen, &op);
        if (hit == AM2Z_WSET_ABSENT)
            return false;
        m1 = hit == AM2Z_WSET_DELETED ? MDB_NOTFOUND : 0;
        mine.mv_size = op->val_size;
        mine.mv_data = (void *)op->val;
        uint64_t from;
        if (s_read_begin_from(self, &rtxn, &from) != AM2Z_OK)
            return true;
        m2 = s_view_get(self, NULL, from, rtxn, AM2Z_DB_SESSIONS, session_id, klen, &theirs);
    } else {
        MDB_val k = { klen, (void *)session_id };
        m1 = mdb_get(batch->txn, self->dbi[AM2Z_DB_SESSIONS], &k, &mine);
        if (s_read_begin(self, &rtxn) != AM2Z_OK)
            return true;
        m2 = mdb_get(rtxn, self->dbi[AM2Z_DB_SESSIONS], &k, &theirs);
    }
    bool same = (m1 == MDB_NOTFOUND && m2 == MDB_NOTFOUND)
                || (m1 == 0 && m2 == 0 && mine.mv_size == theirs.mv_size
                    && memcmp(mine.mv_data, theirs.mv_data, mine.mv_size) == 0);
    s_read_end(self, rtxn);
    return !same;
}

int
am2z_batch_get_record(am2z_store_batch_t *batch, am2z_db_t db,
                      const void *key, size_t key_size, am2z_record_t *rec)
{
    if (rec)
        memset(rec, 0, sizeof *rec);
    int rc = s_batch_usable(batch);
    if (rc != AM2Z_OK)
        return rc;
    if (!rec || !s_db_ok(db) || !am2z_db_sealed(db)
        || !s_key_ok(batch->store, key, key_size))
        return AM2Z_EINVAL;
    return s_batch_get_sealed(batch, db, key, key_size, rec);
}

/*  Copies v out into *value / *value_size. */
static int
s_copy_out(const MDB_val *v, void **value, size_t *value_size)
{
    void *copy = malloc(v->mv_size ? v->mv_size : 1);
    if (!copy)
        return AM2Z_ENOMEM;
    if (v->mv_size)
        memcpy(copy, v->mv_data, v->mv_size);
    *value = copy;
    *value_size = v->mv_size;
    return AM2Z_OK;
}

int
am2z_batch_get_raw(am2z_store_batch_t *batch, am2z_db_t db, const void *key,
                   size_t key_size, void **value, size_t *value_size)
{
    if (value)
        *value = NULL;
    if (value_size)
        *value_size = 0;
    int rc = s_batch_usable(batch);
    if (rc != AM2Z_OK)
        return rc;
    if (!value || !value_size || !s_db_ok(db) || am2z_db_sealed(db)
        || !s_key_ok(batch->store, key, key_size))
        return AM2Z_EINVAL;
    MDB_val v;
    MDB_txn *rtxn;
    int mrc = s_lookup(batch, db, key, key_size, &v, &rtxn);
    rc = mrc == MDB_NOTFOUND ? AM2Z_ENOTFOUND : mrc != 0 ? AM2Z_EIO
         : s_copy_out(&v, value, value_size);
    s_lookup_end(batch->store, rtxn);
    return rc;
}

int
am2z_batch_each(am2z_store_batch_t *batch, am2z_db_t db, const void *start,
                size_t start_size, am2z_store_each_fn *fn, void *arg)
{
    int rc = s_batch_usable(batch);
    if (rc != AM2Z_OK)
        return rc;
    if (!fn || !s_db_ok(db) || (start && !s_key_ok(batch->store, start, start_size)))
        return AM2Z_EINVAL;
    am2z_store_t *self = batch->store;
    MDB_txn *txn = batch->txn;
    uint64_t from = UINT64_MAX;       /* a direct txn holds every set handed over */
    if (batch->ws && (rc = s_read_begin_from(self, &txn, &from)) != AM2Z_OK)
        return rc;
    MDB_cursor *cur = NULL;
    if (mdb_cursor_open(txn, self->dbi[db], &cur) != 0) {
        rc = AM2Z_EIO;
    } else {
        rc = s_view_walk(self, batch->ws, from, cur, db, start, start_size, fn, arg);
        mdb_cursor_close(cur);
    }
    if (batch->ws)
        s_read_end(self, txn);
    return rc;
}

/* ---------------------------------------------------------------------------
   Single operations and reads
   ------------------------------------------------------------------------ */

int
am2z_store_put_state(am2z_store_t *self, const char *session_id,
                     uint64_t expected_version, uint64_t new_version,
                     const uint8_t *state, size_t state_size, uint64_t now_ms)
{
    am2z_store_batch_t *batch;
    int rc = am2z_store_begin(self, &batch);
    if (rc != AM2Z_OK)
        return rc;
    rc = am2z_batch_put_state(batch, session_id, expected_version, new_version,
                              state, state_size, now_ms);
    if (rc != AM2Z_OK) {
        am2z_store_abort(&batch);
        return rc;
    }
    return am2z_store_commit(&batch);
}

int
am2z_store_delete_state(am2z_store_t *self, const char *session_id)
{
    am2z_store_batch_t *batch;
    int rc = am2z_store_begin(self, &batch);
    if (rc != AM2Z_OK)
        return rc;
    rc = am2z_batch_delete_state(batch, session_id);
    if (rc != AM2Z_OK) {
        am2z_store_abort(&batch);
        return rc;
    }
    return am2z_store_commit(&batch);
}

int
am2z_store_get_record(am2z_store_t *self, am2z_db_t db,
                      const void *key, size_t key_size, am2z_record_t *rec)
{
    if (rec)
        memset(rec, 0, sizeof *rec);
    if (!self || !rec || !s_db_ok(db) || !am2z_db_sealed(db)
        || !s_key_ok(self, key, key_size))
        return AM2Z_EINVAL;
    MDB_txn *txn;
    uint64_t from;
    int rc = s_read_begin_from(self, &txn, &from);
    if (rc != AM2Z_OK)
        return rc;
    MDB_val v;
    int mrc = s_view_get(self, NULL, from, txn, db, key, key_size, &v);
    rc = mrc == MDB_NOTFOUND ? AM2Z_ENOTFOUND : mrc != 0 ? AM2Z_EIO : s_unseal(&v, rec);
    s_read_end(self, txn);
    return rc;
}

int
am2z_store_get_state(am2z_store_t *self, const char *session_id,
                     am2z_record_t *rec)
{
    if (rec)
        memset(rec, 0, sizeof *rec);
    if (!s_session_ok(session_id))
        return AM2Z_EINVAL;
    return am2z_store_get_record(self, AM2Z_DB_SESSIONS, session_id,
                                 strlen(session_id), rec);
}

int
am2z_store_get_raw(am2z_store_t *self, am2z_db_t db, const void *key,
                   size_t key_size, void **value, size_t *value_size)
{
    if (value)
        *value = NULL;
    if (value_size)
        *value_size = 0;
    if (!self || !value || !value_size || !s_db_ok(db) || am2z_db_sealed(db)
        || !s_key_ok(self, key, key_size))
        return AM2Z_EINVAL;
    MDB_txn *txn;
    uint64_t from;
    int rc = s_read_begin_from(self, &txn, &from);
    if (rc != AM2Z_OK)
        return rc;
    MDB_val v;
    int mrc = s_view_get(self, NULL, from, txn, db, key, key_size, &v);
    rc = mrc == MDB_NOTFOUND ? AM2Z_ENOTFOUND : mrc != 0 ? AM2Z_EIO
         : s_copy_out(&v, value, value_size);
    s_read_end(self, txn);
    return rc;
}

int
am2z_store_each(am2z_store_t *self, am2z_db_t db, const void *start,
                size_t start_size, am2z_store_each_fn *fn, void *arg)
{
    if (!self || !fn || !s_db_ok(db) || (start && !s_key_ok(self, start, start_size)))
        return AM2Z_EINVAL;
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    uint64_t from;
    int rc = s_read_begin_from(self, &txn, &from);
    if (rc != AM2Z_OK)
        return rc;
    if (mdb_cursor_open(txn, self->dbi[db], &cur) != 0) {
        rc = AM2Z_EIO;
    } else {
        rc = s_view_walk(self, NULL, from, cur, db, start, start_size, fn, arg);
        mdb_cursor_close(cur);
    }
    s_read_end(self, txn);
    return rc;
}

typedef struct {
    am2z_store_session_fn *fn;
    void *arg;
} s_list_ctx_t;

static int
s_list_one(const void *key, size_t key_size, const void *value,
           size_t value_size, void *arg)
{
    (void)value;
    (void)value_size;
    s_list_ctx_t *ctx = arg;
    char id[AM2Z_SESSION_ID_MAX + 1];
    /*  Only ids that passed s_session_ok are ever written; anything else in
        this database is not a session and is skipped. */
    if (key_size > AM2Z_SESSION_ID_MAX)
        return 0;
    memcpy(id, key, key_size);
    id[key_size] = '\0';
    if (!am2z_session_id_valid(id, key_size))
        return 0;
    return ctx->fn(id, ctx->arg);
}

int
am2z_store_list_sessions(am2z_store_t *self, am2z_store_session_fn *fn,
                         void *arg)
{
    if (!fn)
        return AM2Z_EINVAL;
    s_list_ctx_t ctx = { fn, arg };
    return am2z_store_each(self, AM2Z_DB_SESSIONS, NULL, 0, s_list_one, &ctx);
}

/* ---------------------------------------------------------------------------
   Durability and stats
   ------------------------------------------------------------------------ */

int
am2z_store_defer_meta(am2z_store_t *self)
{
    if (!self || self->durability != AM2Z_DURABILITY_SYNC || self->batch.open || self->piped)
        return AM2Z_EINVAL;
    if (self->defer_meta)
        return AM2Z_OK;
    if (mdb_env_set_flags(self->env, MDB_NOMETASYNC, 1) != 0)
        return AM2Z_EIO;
    MDB_envinfo info;
    mdb_env_info(self->env, &info);
    self->committed_txn = self->durable_txn = (uint64_t)info.me_last_txnid;
    self->defer_meta = true;
    return AM2Z_OK;
}

uint64_t
am2z_store_committed(const am2z_store_t *self)
{
    return self ? self->committed_txn : 0;
}

uint64_t
am2z_store_durable(const am2z_store_t *self)
{
    if (!self)
        return 0;
    return self->piped ? __atomic_load_n(&self->w_durable, __ATOMIC_ACQUIRE)
                       : self->durable_txn;
}

int
am2z_store_pipeline(am2z_store_t *self)
{
    if (!self || self->durability != AM2Z_DURABILITY_SYNC || self->batch.open)
        return AM2Z_EINVAL;
    if (self->piped)
        return AM2Z_OK;
    if (self->defer_meta)
        return AM2Z_EINVAL;
    MDB_txn *txn;
    MDB_stat st;
    if (mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn) != 0)
        return AM2Z_EIO;
    int mrc = mdb_stat(txn, self->dbi[AM2Z_DB_SESSIONS], &st);
    mdb_txn_abort(txn);
    if (mrc != 0)
        return AM2Z_EIO;
    self->sessions_n = st.ms_entries;
    self->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->efd < 0)
        return AM2Z_EIO;
    if (mdb_env_set_flags(self->env, MDB_NOMETASYNC, 1) != 0)
        goto fail_fd;
    self->committed_txn = self->durable_txn = 0;
    self->w_applied = self->w_durable = 0;
    self->w_error = 0;
    self->stop = false;
    if (pthread_mutex_init(&self->mu, NULL) != 0)
        goto fail_flags;
    if (pthread_cond_init(&self->wake, NULL) != 0)
        goto fail_mu;
    if (pthread_cond_init(&self->progress, NULL) != 0)
        goto fail_wake;
    if (pthread_create(&self->writer, NULL, s_writer, self) != 0)
        goto fail_progress;
    pthread_setname_np(self->writer, "am2z-writer");   /* top -H, perf, /proc/PID/task */
    self->piped = true;
    return AM2Z_OK;
fail_progress:
    pthread_cond_destroy(&self->progress);
fail_wake:
    pthread_cond_destroy(&self->wake);
fail_mu:
    pthread_mutex_destroy(&self->mu);
fail_flags:
    mdb_env_set_flags(self->env, MDB_NOMETASYNC, 0);
fail_fd:
    close(self->efd);
    self->efd = -1;
    return AM2Z_EIO;
}

int
am2z_store_event_fd(const am2z_store_t *self)
{
    return self && self->piped ? self->efd : -1;
}

int
am2z_store_poll(am2z_store_t *self)
{
    if (!self)
        return AM2Z_EINVAL;
    if (!self->piped)
        return AM2Z_OK;
    uint64_t n;
    if (read(self->efd, &n, sizeof n) < 0) {
        /* EAGAIN: nothing new */
    }
    s_settle(self, __atomic_load_n(&self->w_applied, __ATOMIC_ACQUIRE));
    return s_writer_failure(self);
}

/*  Stops the writer after it applied and flushed what it was handed. */
static void
s_pipeline_stop(am2z_store_t *self)
{
    pthread_mutex_lock(&self->mu);
    self->stop = true;
    pthread_cond_signal(&self->wake);
    pthread_mutex_unlock(&self->mu);
    pthread_join(self->writer, NULL);
    pthread_cond_destroy(&self->progress);
    pthread_cond_destroy(&self->wake);
    pthread_mutex_destroy(&self->mu);
    self->walks = 0;
    s_settle(self, UINT64_MAX);
    close(self->efd);
    self->efd = -1;
    self->piped = false;
}

int
am2z_store_sync(am2z_store_t *self)
{
    if (!self)
        return AM2Z_EINVAL;
    if (self->piped)
        return s_wait_writer(self, true);
    if (self->defer_meta && self->durable_txn != self->committed_txn) {
        if (mdb_env_sync(self->env, 1) != 0)
            return AM2Z_EIO;
        self->durable_txn = self->committed_txn;
        self->syncs++;
    }
    return am2z_store_flush(self);
}

int
am2z_store_flush(am2z_store_t *self)
{
    if (!self)
        return AM2Z_EINVAL;
    if (self->piped || (self->defer_meta && self->durable_txn != self->committed_txn))
        return am2z_store_sync(self);
    if (self->unsynced_commits == 0)
        return AM2Z_OK;
    if (mdb_env_sync(self->env, 1) != 0)
        return AM2Z_EIO;
    self->unsynced_commits = 0;
    self->syncs++;
    return AM2Z_OK;
}

int
am2z_store_flush_due(am2z_store_t *self, uint64_t now_ms, uint64_t *next_ms)
{
    if (next_ms)
        *next_ms = UINT64_MAX;
    if (!self)
        return AM2Z_EINVAL;
    if (self->unsynced_commits == 0)
        return AM2Z_OK;
    /*  A now_ms earlier than the commit (a caller's stale timestamp) counts
        as no time elapsed rather than wrapping around. */
    uint64_t age = now_ms > self->unsynced_since_ms
                 ? now_ms - self->unsynced_since_ms : 0;
    if (age < self->flush_interval_ms) {
        if (next_ms)
            *next_ms = self->flush_interval_ms - age;
        return AM2Z_OK;
    }
    return am2z_store_flush(self);
}

int
am2z_store_stats(am2z_store_t *self, am2z_store_stats_t *stats)
{
    if (stats)
        memset(stats, 0, sizeof *stats);
    if (!self || !stats)
        return AM2Z_EINVAL;
    MDB_txn *txn;
    int rc;
    if (self->piped) {
        /* counts of every commit, not of the writer's last: wait for it,
           then read a snapshot of its own (a batch may hold the cached one) */
        s_wait_writer(self, false);
        rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn) == 0 ? AM2Z_OK : AM2Z_EIO;
    } else {
        rc = s_read_begin(self, &txn);
    }
    if (rc != AM2Z_OK)
        return rc;
    for (int i = 0; i < AM2Z_DB_COUNT_; i++) {
        MDB_stat st;
        if (mdb_stat(txn, self->dbi[i], &st) != 0) {
            rc = AM2Z_EIO;
            goto done;
        }
        stats->entries[i] = st.ms_entries;
    }
    stats->sessions = stats->entries[AM2Z_DB_SESSIONS];
    stats->jobs = stats->entries[AM2Z_DB_JOBS];

    MDB_envinfo info;
    MDB_stat est;
    mdb_env_info(self->env, &info);
    mdb_env_stat(self->env, &est);
    stats->map_size = info.me_mapsize;
    stats->used_bytes = ((uint64_t)info.me_last_pgno + 1) * est.ms_psize;
    stats->unsynced_commits = self->unsynced_commits;
    stats->alloc_bytes = self->alloc_end;
    stats->retired_entries = self->retired_entries;
    int werr = self->last_write_error;
    if (self->piped) {
        pthread_mutex_lock(&self->mu);
        stats->syncs = self->syncs;
        stats->writer_commits = self->w_commits;
        stats->writer_sets = self->w_sets;
        if (self->w_error)
            werr = self->w_error;
        pthread_mutex_unlock(&self->mu);
    } else {
        stats->syncs = self->syncs;
    }
    /* LMDB's own codes (MDB_MAP_FULL, ...) are negative, errno values positive */
    stats->write_errno = werr > 0 ? werr : 0;

done:
    if (self->piped)
        mdb_txn_abort(txn);
    else
        s_read_end(self, txn);
    return rc;
}
