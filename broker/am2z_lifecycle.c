/*  am2z_lifecycle.c — session lifecycle and retention (issue 6): session
    tracking (created, last activity, job counts), stop_session's cleanup
    and grace wait, idle-session expiry (session-ttl), result retention per
    processor (count and age) and the dead-letter bound.

    Store layout (raw databases, all written in the loop turn's batch):

        sessinfo   session id                     -> info (33 bytes, below)
        done       proc \0 outcome ms(8, BE) job  -> session id

    outcome is 'c' (completed) or 'f' (failed). A `done` key sorts a
    processor's results of one outcome oldest first. Every result record
    has exactly one `done` entry (written with it in s_finish, deleted with
    it: retention, stop, expiry, DLQ retry).

    The broker reads `done` once, at start (and after a failed commit), and
    keeps its mirror in memory (rent_t, below): per processor and outcome
    a list oldest first, which retention trims from the head; per session
    a list, which its cleanup deletes; by job id a hash, for a DLQ retry.
    The store is only written: a finished job costs one `done` put and, at
    its trim, one delete, each near the B-tree's edge. (Until 2026-11 a
    `bysession` database indexed results by session on disk: two writes
    per job at a random leaf each, 8-19 % of the bytes a sync run wrote:
    bench/where-the-time-goes.md. The store drops it when it opens an
    older data directory.)
    Memory: one rent_t (56 bytes and the key) and one hash item per
    retained result, ≈ 190 bytes measured, i.e. bounded by the retain-*
    settings.

    sessinfo value: version byte 1, then created, lastActivity, completed,
    failed as big-endian uint64. It is written when the session is created
    (same batch as its first job) and by stop with keep_state; after that
    finished jobs only mark it dirty, and the dirty ones are written
    together at most once a second (and at a clean exit) — no extra random
    write per job. A crash loses at most that last second of counts; last
    activity is then also taken from the state envelope's updated time.

    Everything here runs on the broker's loop thread.
*/
#include "am2z_broker_int.h"
#include "am2z_hash.h"
#include "am2z_jobrec.h"

#include <endian.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_BUDGET 256              /* index entries deleted per turn by timers */
#define S_EXPIRE_MAX 64           /* sessions expired per turn */
#define S_INFO_FLUSH_MS 1000      /* changed session info is stored this often */
#define S_INFO_FLUSH_MAX 4096     /* ... at most this many per turn */
#define S_INFO_SIZE 33
#define S_INFO_VERSION 1
#define S_KEY_MAX 512             /* LMDB's key limit (511) + 1 */

typedef struct rent_s rent_t;

/*  What the broker knows of one session besides its lane. */
typedef struct {
    char *id;                     /* after the struct, same block; the key in lc->sessions */
    uint64_t created_ms;          /* wall clock of its first job */
    uint64_t last_ms;             /* wall clock of its last submit / finish */
    uint64_t completed;           /* jobs completed since created */
    uint64_t failed;              /* jobs failed since created */
    void *idle_handle;            /* in lc->idle while idle, else NULL */
    void *dirty_handle;           /* in lc->dirty while its stored info is stale */
    rent_t *results;              /* its retained results (rent_t.snext), any order */
} sinfo_t;

/*  Retained results of one processor: [0] completed, [1] failed. */
typedef struct {
    char *proc;                   /* owned */
    uint64_t count[2];            /* entries in `done` (= in the list) */
    rent_t *head[2], *tail[2];    /* rent_t.bnext: oldest first, in `done` key order */
} retain_t;

/*  One retained result: the in-memory mirror of its `done` entry. */
struct rent_s {
    rent_t *sprev, *snext;        /* its session's results */
    rent_t *bprev, *bnext;        /* its bucket's results of the outcome */
    sinfo_t *si;                  /* borrowed; NULL when the `done` value names none */
    retain_t *b;                  /* borrowed */
    uint16_t size;                /* of the `done` key */
    uint16_t job;                 /* offset of the job id in it */
    uint8_t outcome;
    uint8_t key[];                /* the `done` key, then a NUL (the job id is a string) */
};

/*  A `done` key to delete (s_load found a newer entry of its job). */
typedef struct {
    size_t size;
    uint8_t key[];
} stale_t;

/*  A stop or an expiry: staged in the turn, answered after its commit
    (stop: once its running jobs ended or the grace expired). */
typedef struct {
    peer_t peer;                  /* requester; ident_size 0 = expiry */
    char *session;                /* owned */
    bool keep;
    bool expired;                 /* TTL, not STOP_SESSION */
    uint64_t cancelled;           /* jobs cancelled */
    zlistx_t *wait;               /* char* job ids still running (owned) */
    uint64_t deadline_us;         /* monotonic: the grace ends */
} stop_t;

/*  Invariants: every sinfo_t with idle_handle is in `idle`, ordered by
    last_ms (oldest first); a session with queued or running jobs is not in
    `idle` (am2zb_lc_touch takes it out; the expiry check re-verifies).
    `results` holds exactly the `done` entries of the committed store plus
    this turn's batch, each in its bucket's list (sorted as `done` sorts)
    and in its session's; bucket counts are the lists' lengths (a failed
    commit reloads everything from the store). */
struct am2zb_lc_s {
    am2z_idmap_t *sessions;       /* id -> sinfo_t* (owned) */
    zlistx_t *idle;               /* sinfo_t* (borrowed), by last_ms */
    zhashx_t *buckets;            /* proc name -> retain_t* (owned) */
    am2z_idmap_t *results;        /* job id -> rent_t* (owned; the key is in it) */
    zlistx_t *staged;             /* stop_t* of this turn (owned) */
    zlistx_t *pending;            /* stop_t* committed, waiting (owned) */
    bool dlq_base_known;          /* dlq_base is current (see am2zb_lc_committed) */
    uint64_t dlq_base;            /* committed dead letters at the turn's start */
    int64_t dlq_delta;            /* this turn's puts minus deletions */
    uint64_t dlq_dropped;         /* dead letters dropped since start */
    char dlq_resume[AM2Z_JOB_ID_MAX + 1]; /* the last key a drop deleted ("" = none):
                                     no dead letter sorts before it */
    uint64_t expired;             /* sessions expired since start */
    uint64_t trimmed;             /* results deleted by retention since start */
    zlistx_t *stale;              /* s_load: `done` keys (stale_t, owned) of a job that
                                     has a newer entry: deleted by the next turn */
    zlistx_t *dirty;              /* sinfo_t* (borrowed) whose counts changed */
    uint64_t flush_at_ms;         /* wall clock: store the dirty ones then */
};

/* ---------------------------------------------------------------------------
   Small helpers
   ------------------------------------------------------------------------ */

static void
s_str_free(void **item)
{
    free(*item);
    *item = NULL;
}

static void
s_sinfo_free(void **item)
{
    sinfo_t *si = *item;
    if (si) {
        free(si);                 /* the id with it */
    }
    *item = NULL;
}

static void
s_bucket_free(void **item)
{
    retain_t *b = *item;
    if (b) {
        free(b->proc);
        free(b);
    }
    *item = NULL;
}

static void
s_stop_free(void **item)
{
    stop_t *st = *item;
    if (st) {
        free(st->session);
        zlistx_destroy(&st->wait);
        free(st);
    }
    *item = NULL;
}

static int
s_by_last(const void *a, const void *b)
{
    const sinfo_t *x = a, *y = b;
    return x->last_ms < y->last_ms ? -1 : x->last_ms > y->last_ms ? 1 : 0;
}

static void
s_put_u64(uint8_t *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, 8);
}

static uint64_t
s_get_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return be64toh(v);
}

/*  `done` key: proc \0 outcome ms job. Returns its size, 0 when too long. */
static size_t
s_done_key(uint8_t *out, const char *proc, bool ok, uint64_t ms, const char *job)
{
    size_t np = strlen(proc), nj = strlen(job);
    if (np + 1 + 1 + 8 + nj >= S_KEY_MAX)
        return 0;
    memcpy(out, proc, np);
    out[np] = '\0';
    out[np + 1] = ok ? 'c' : 'f';
    s_put_u64(out + np + 2, ms);
    memcpy(out + np + 10, job, nj);
    return np + 10 + nj;
}

/*  Splits a `done` key. Returns false when it is not one. */
static bool
s_done_parse(const uint8_t *key, size_t size, size_t *proc_len, int *outcome,
             uint64_t *ms, const uint8_t **job, size_t *job_len)
{
    const uint8_t *nul = memchr(key, '\0', size);
    if (!nul)
        return false;
    size_t np = (size_t)(nul - key);
    if (np == 0 || size < np + 10 + 1 || (key[np + 1] != 'c' && key[np + 1] != 'f'))
        return false;
    *proc_len = np;
    *outcome = key[np + 1] == 'c' ? 0 : 1;
    *ms = s_get_u64(key + np + 2);
    *job = key + np + 10;
    *job_len = size - np - 10;
    return true;
}

static retain_t *
s_bucket(am2zb_lc_t *lc, const char *proc, bool create)
{
    retain_t *b = zhashx_lookup(lc->buckets, proc);
    if (b || !create)
        return b;
    b = calloc(1, sizeof *b);
    if (!b || !(b->proc = strdup(proc))) {
        free(b);
        return NULL;
    }
    zhashx_insert(lc->buckets, proc, b);
    return b;
}

static retain_t *
s_bucket_n(am2zb_lc_t *lc, const uint8_t *proc, size_t len, bool create)
{
    char name[AM2Z_NAME_MAX + 1];
    if (len > AM2Z_NAME_MAX)
        return NULL;
    memcpy(name, proc, len);
    name[len] = '\0';
    return s_bucket(lc, name, create);
}

static uint64_t
s_retain_count(const am2z_broker_t *self, int outcome)
{
    return outcome == 0 ? self->cfg.retain_completed : self->cfg.retain_failed;
}

static uint64_t
s_retain_age(const am2z_broker_t *self, int outcome)
{
    return outcome == 0 ? self->cfg.retain_completed_ms : self->cfg.retain_failed_ms;
}

/*  True when the session (may be NULL) has queued or running jobs. */
static bool
s_session_busy(session_t *s)
{
    return s && (s->active || zlistx_size(s->lane) > 0);
}

static bool
s_busy(am2z_broker_t *self, const char *id)
{
    return s_session_busy(am2zb_session_get(self, id, false));
}

/* ---------------------------------------------------------------------------
   Session info
   ------------------------------------------------------------------------ */

static sinfo_t *
s_sinfo_add(am2zb_lc_t *lc, const char *id, uint64_t created, uint64_t last)
{
    size_t id_size = strlen(id) + 1;
    sinfo_t *si = calloc(1, sizeof *si + id_size);   /* the id right after: one block */
    if (!si)
        return NULL;
    si->id = memcpy((char *)(si + 1), id, id_size);
    si->created_ms = created;
    si->last_ms = last;
    am2z_idmap_insert(lc->sessions, si->id, si);   /* key borrowed */
    return si;
}

static void
s_unidle(am2zb_lc_t *lc, sinfo_t *si)
{
    if (si->idle_handle) {
        zlistx_delete(lc->idle, si->idle_handle);
        si->idle_handle = NULL;
    }
}

static void
s_idle(am2zb_lc_t *lc, sinfo_t *si)
{
    s_unidle(lc, si);
    si->idle_handle = zlistx_insert(lc->idle, si, false);   /* from the end */
}

static void s_clean(am2zb_lc_t *lc, sinfo_t *si);

static void
s_sinfo_remove(am2zb_lc_t *lc, const char *id)
{
    sinfo_t *si = am2z_idmap_lookup(lc->sessions, id);
    if (!si)
        return;
    s_unidle(lc, si);
    s_clean(lc, si);
    /* its cleanup dropped its results first; any left keep their place in
       retention but no longer name the freed info */
    for (rent_t *e = si->results, *next; e; e = next) {
        next = e->snext;
        e->si = NULL;
        e->sprev = e->snext = NULL;
    }
    am2z_idmap_delete(lc->sessions, id);      /* frees si */
}

static int
s_info_put(am2z_broker_t *self, const sinfo_t *si)
{
    am2z_store_batch_t *batch = am2zb_batch(self);
    if (!batch)
        return self->batch_rc;
    uint8_t v[S_INFO_SIZE];
    v[0] = S_INFO_VERSION;
    s_put_u64(v + 1, si->created_ms);
    s_put_u64(v + 9, si->last_ms);
    s_put_u64(v + 17, si->completed);
    s_put_u64(v + 25, si->failed);
    int rc = am2z_batch_put_raw(batch, AM2Z_DB_SESSINFO, si->id, strlen(si->id), v, sizeof v);
    if (rc != AM2Z_OK)
        AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT, "cannot store session info",
                 AM2Z_KS("session", si->id), AM2Z_KS("error", am2z_strerror(rc)));
    return rc;
}

static void
s_clean(am2zb_lc_t *lc, sinfo_t *si)
{
    if (si->dirty_handle) {
        zlistx_delete(lc->dirty, si->dirty_handle);
        si->dirty_handle = NULL;
    }
}

/*  Stores the info now (in this turn's batch). */
static void
s_info_store(am2z_broker_t *self, sinfo_t *si)
{
    s_clean(self->lc, si);
    s_info_put(self, si);
}

/*  The counts changed: stored within S_INFO_FLUSH_MS (or at shutdown). */
static void
s_dirty(am2z_broker_t *self, sinfo_t *si)
{
    am2zb_lc_t *lc = self->lc;
    if (si->dirty_handle)
        return;
    if (!zlistx_size(lc->dirty))
        lc->flush_at_ms = am2z_clock_wall_ms() + S_INFO_FLUSH_MS;
    si->dirty_handle = zlistx_add_end(lc->dirty, si);
}

/*  Stores the dirty infos (bounded), in turn or at shutdown. */
static void
s_flush_info(am2z_broker_t *self, size_t max)
{
    am2zb_lc_t *lc = self->lc;
    sinfo_t *si;
    for (size_t n = 0; n < max && (si = zlistx_first(lc->dirty)); n++)
        s_info_store(self, si);
    if (zlistx_size(lc->dirty))
        lc->flush_at_ms = am2z_clock_wall_ms();
}

bool
am2zb_lc_touch(am2z_broker_t *self, const char *session, uint64_t now_ms)
{
    am2zb_lc_t *lc = self->lc;
    sinfo_t *si = am2z_idmap_lookup(lc->sessions, session);
    bool created = false;
    if (!si) {
        si = s_sinfo_add(lc, session, now_ms, now_ms);
        if (!si)
            return false;
        s_info_store(self, si);
        created = true;
    }
    if (now_ms > si->last_ms)
        si->last_ms = now_ms;
    s_unidle(lc, si);
    return created;
}

/* ---------------------------------------------------------------------------
   The retention index in memory (rent_t)
   ------------------------------------------------------------------------ */

static void
s_rent_free(void **item)
{
    free(*item);
    *item = NULL;
}

static uint64_t
s_rent_ms(const rent_t *e)
{
    return s_get_u64(e->key + e->job - 8);
}

/*  The finish time of the oldest result of (b, outcome), UINT64_MAX = none. */
static uint64_t
s_oldest_ms(const retain_t *b, int outcome)
{
    return b->head[outcome] ? s_rent_ms(b->head[outcome]) : UINT64_MAX;
}

/*  LMDB's default key order: bytes, then the shorter first. */
static int
s_key_cmp(const rent_t *e, const uint8_t *key, size_t size)
{
    size_t n = e->size < size ? e->size : size;
    int c = memcmp(e->key, key, n);
    return c ? c : e->size < size ? -1 : e->size > size ? 1 : 0;
}

/*  Adds the entry of `done` key (key, size), whose job id starts at job,
    to b's list (at its place in key order: from the end, where a new
    finish goes unless the clock stepped back), to si's list (si may be
    NULL) and to lc->results. NULL when out of memory or when the job id
    has an entry already. */
static rent_t *
s_rent_add(am2zb_lc_t *lc, retain_t *b, int outcome, sinfo_t *si, const uint8_t *key,
           size_t size, size_t job)
{
    if (size >= S_KEY_MAX || job >= size)
        return NULL;
    rent_t *e = malloc(sizeof *e + size + 1);
    if (!e)
        return NULL;
    memset(e, 0, sizeof *e);
    memcpy(e->key, key, size);
    e->key[size] = '\0';
    e->size = (uint16_t)size;
    e->job = (uint16_t)job;
    e->outcome = (uint8_t)outcome;
    e->b = b;
    e->si = si;
    if (am2z_idmap_insert(lc->results, (const char *)e->key + job, e) != 0) {
        free(e);
        return NULL;
    }
    rent_t *at = b->tail[outcome];
    while (at && s_key_cmp(at, key, size) > 0)
        at = at->bprev;
    e->bprev = at;
    e->bnext = at ? at->bnext : b->head[outcome];
    if (e->bnext)
        e->bnext->bprev = e;
    else
        b->tail[outcome] = e;
    if (at)
        at->bnext = e;
    else
        b->head[outcome] = e;
    b->count[outcome]++;
    if (si) {
        e->snext = si->results;
        if (si->results)
            si->results->sprev = e;
        si->results = e;
    }
    return e;
}

/*  Takes e out of its lists and frees it (nothing in the store). */
static void
s_rent_forget(am2zb_lc_t *lc, rent_t *e)
{
    retain_t *b = e->b;
    int o = e->outcome;
    if (e->bprev)
        e->bprev->bnext = e->bnext;
    else
        b->head[o] = e->bnext;
    if (e->bnext)
        e->bnext->bprev = e->bprev;
    else
        b->tail[o] = e->bprev;
    if (b->count[o])
        b->count[o]--;
    if (e->si) {
        if (e->sprev)
            e->sprev->snext = e->snext;
        else
            e->si->results = e->snext;
        if (e->snext)
            e->snext->sprev = e->sprev;
    }
    am2z_idmap_delete(lc->results, (const char *)e->key + e->job);   /* frees e */
}

/*  Deletes one result with its `done` entry, in the batch and in memory. */
static void
s_drop_result(am2z_broker_t *self, am2z_store_batch_t *batch, rent_t *e)
{
    /* both are there (the index mirrors `done`, and `done` its results):
       no lookup before the deletes */
    am2z_batch_del_any(batch, AM2Z_DB_DONE, e->key, e->size);
    am2z_batch_del_any(batch, AM2Z_DB_RESULTS, e->key + e->job, (size_t)(e->size - e->job));
    s_rent_forget(self->lc, e);
}

/*  Deletes up to max of the oldest results of (b, outcome), all of them
    older than before_ms when it is not 0. Returns how many. */
static size_t
s_trim(am2z_broker_t *self, retain_t *b, int outcome, size_t max, uint64_t before_ms)
{
    am2z_store_batch_t *batch = am2zb_batch(self);
    if (!batch)
        return 0;
    size_t n = 0;
    rent_t *e;
    while (n < max && (e = b->head[outcome]) && (!before_ms || s_rent_ms(e) < before_ms)) {
        s_drop_result(self, batch, e);
        n++;
    }
    self->lc->trimmed += n;
    if (n)
        AM2Z_LOG(self->log, AM2Z_LOG_DEBUG, S_COMPONENT, "results trimmed",
                 AM2Z_KS("proc", b->proc), AM2Z_KS("outcome", outcome ? "failed" : "completed"),
                 AM2Z_KU("deleted", n), AM2Z_KU("kept", b->count[outcome]));
    return n;
}

void
am2zb_lc_finished(am2z_broker_t *self, const job_t *job, session_t *session, bool ok,
                  uint64_t now_ms)
{
    am2zb_lc_t *lc = self->lc;
    am2z_store_batch_t *batch = am2zb_batch(self);
    if (!lc || !batch)
        return;
    sinfo_t *si = am2z_idmap_lookup(lc->sessions, job->session_id);
    if (!si)
        si = s_sinfo_add(lc, job->session_id, now_ms, now_ms);
    /* a job that finishes again (its result was just rewritten) keeps one
       entry: the new one */
    rent_t *old = am2z_idmap_lookup(lc->results, job->id);
    if (old) {
        am2z_batch_del_any(batch, AM2Z_DB_DONE, old->key, old->size);
        s_rent_forget(lc, old);
    }
    uint8_t dkey[S_KEY_MAX];
    size_t nd = s_done_key(dkey, job->proc->name, ok, now_ms, job->id);
    retain_t *b = s_bucket(lc, job->proc->name, true);
    int outcome = ok ? 0 : 1;
    if (nd && b
        && am2z_batch_put_raw(batch, AM2Z_DB_DONE, dkey, nd, job->session_id,
                              strlen(job->session_id)) == AM2Z_OK) {
        if (!s_rent_add(lc, b, outcome, si, dkey, nd, nd - strlen(job->id))) {
            /* no memory to index it: no entry, so memory and store agree
               (the result is kept until its session goes) */
            am2z_batch_del_any(batch, AM2Z_DB_DONE, dkey, nd);
            AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT,
                     "out of memory: result kept outside retention", AM2Z_KS("job", job->id));
        } else {
            uint64_t keep = s_retain_count(self, outcome);
            if (b->count[outcome] > keep) {
                uint64_t over = b->count[outcome] - keep;
                s_trim(self, b, outcome, over > S_BUDGET ? S_BUDGET : (size_t)over, 0);
            }
        }
    }
    if (!si)
        return;
    if (ok)
        si->completed++;
    else
        si->failed++;
    if (now_ms > si->last_ms)
        si->last_ms = now_ms;
    s_dirty(self, si);
    if (!(session ? s_session_busy(session) : s_busy(self, si->id)))
        s_idle(lc, si);
}

void
am2zb_lc_result_dropped(am2z_broker_t *self, const char *job_id)
{
    am2z_store_batch_t *batch = am2zb_batch(self);
    if (!self->lc || !batch)
        return;
    rent_t *e = am2z_idmap_lookup(self->lc->results, job_id);
    if (e)
        s_drop_result(self, batch, e);
}

/* ---------------------------------------------------------------------------
   Dead letters
   ------------------------------------------------------------------------ */

static uint64_t
s_dlq_count(am2z_broker_t *self)
{
    am2zb_lc_t *lc = self->lc;
    if (!lc->dlq_base_known) {
        am2z_store_stats_t st;
        memset(&st, 0, sizeof st);
        am2z_store_stats(self->store, &st);
        lc->dlq_base = st.entries[AM2Z_DB_DLQ];
        lc->dlq_base_known = true;
        lc->dlq_delta = 0;
    }
    int64_t n = (int64_t)lc->dlq_base + lc->dlq_delta;
    return n > 0 ? (uint64_t)n : 0;
}

static int
s_first_key(const void *key, size_t key_size, const void *value, size_t value_size,
            void *arg)
{
    (void)value;
    (void)value_size;
    char *out = arg;
    if (key_size <= AM2Z_JOB_ID_MAX) {
        memcpy(out, key, key_size);
        out[key_size] = '\0';
    }
    return 1;
}

void
am2zb_lc_dead_lettered(am2z_broker_t *self, const char *job_id)
{
    am2zb_lc_t *lc = self->lc;
    am2z_store_batch_t *batch = am2zb_batch(self);
    if (!lc || !batch)
        return;
    s_dlq_count(self);
    lc->dlq_delta++;
    /*  Key order is age order: ids start with their submission ms. A drop
        walks from the key the last one deleted: the deletes of the turns
        still in flight to the store's writer are tombstones a walk from
        the start would step over, one more for every drop. A new dead
        letter that sorts before that key (submitted earlier, failed
        later) sends the next walk back to the start. */
    if (lc->dlq_resume[0] && strcmp(job_id, lc->dlq_resume) < 0)
        lc->dlq_resume[0] = '\0';
    while (s_dlq_count(self) > self->cfg.dlq_max) {
        char oldest[AM2Z_JOB_ID_MAX + 1] = "";
        size_t from = strlen(lc->dlq_resume);
        am2z_batch_each(batch, AM2Z_DB_DLQ, from ? lc->dlq_resume : NULL, from, s_first_key,
                        oldest);
        if (!oldest[0] && from) {
            lc->dlq_resume[0] = '\0';       /* nothing after it: look from the start */
            continue;
        }
        if (!oldest[0] || am2z_batch_del(batch, AM2Z_DB_DLQ, oldest, strlen(oldest)) != AM2Z_OK)
            break;
        memcpy(lc->dlq_resume, oldest, sizeof oldest);
        lc->dlq_delta--;
        lc->dlq_dropped++;
        AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT,
                 "dead-letter store full (dlq-max): oldest dead letter dropped",
                 AM2Z_KS("dropped", oldest), AM2Z_KS("for", job_id),
                 AM2Z_KU("dlq_max", self->cfg.dlq_max), AM2Z_KU("dropped_total", lc->dlq_dropped));
    }
}

void
am2zb_lc_dlq_removed(am2z_broker_t *self)
{
    if (!self->lc)
        return;
    s_dlq_count(self);
    self->lc->dlq_delta--;
}

/* ---------------------------------------------------------------------------
   Session cleanup (stop, expiry)
   ------------------------------------------------------------------------ */

/*  Deletes the session's results (with their index entries), its state and
    its info record in this turn's batch, and forgets it. */
static void
s_cleanup(am2z_broker_t *self, const char *session)
{
    am2z_store_batch_t *batch = am2zb_batch(self);
    if (!batch)
        return;
    size_t ns = strlen(session);
    if (ns > AM2Z_SESSION_ID_MAX)
        return;
    sinfo_t *si = am2z_idmap_lookup(self->lc->sessions, session);
    while (si && si->results)
        s_drop_result(self, batch, si->results);
    am2z_batch_delete_state(batch, session);                 /* ENOTFOUND ok */
    am2z_batch_del(batch, AM2Z_DB_SESSINFO, session, ns);    /* ENOTFOUND ok */
    s_sinfo_remove(self->lc, session);
}

static stop_t *
s_stage(am2z_broker_t *self, const peer_t *peer, const char *session, bool keep,
        bool expired, uint64_t cancelled)
{
    stop_t *st = calloc(1, sizeof *st);
    if (!st || !(st->session = strdup(session)) || !(st->wait = zlistx_new())) {
        if (st)
            free(st->session);
        free(st);
        return NULL;
    }
    zlistx_set_destructor(st->wait, s_str_free);
    if (peer)
        st->peer = *peer;
    st->keep = keep;
    st->expired = expired;
    st->cancelled = cancelled;
    zlistx_add_end(self->lc->staged, st);
    return st;
}

static void
s_wait_for(stop_t *st, const char *job_id)
{
    char *id = strdup(job_id);
    if (id)
        zlistx_add_end(st->wait, id);
}

void
am2zb_lc_stop(am2z_broker_t *self, const peer_t *peer, const char *session, bool keep,
              const char *wait_job, bool wait_all, uint64_t cancelled)
{
    am2zb_lc_t *lc = self->lc;
    if (keep) {
        sinfo_t *si = am2z_idmap_lookup(lc->sessions, session);
        if (si) {
            uint64_t now = am2z_clock_wall_ms();
            if (now > si->last_ms)
                si->last_ms = now;
            s_info_store(self, si);
            s_idle(lc, si);
        }
    } else {
        s_cleanup(self, session);
    }
    stop_t *st = s_stage(self, peer, session, keep, false, cancelled);
    if (!st) {
        am2z_error_t *e = am2z_error_new(AM2Z_CAT_RESOURCE, "OUT_OF_MEMORY",
                                         "broker out of memory");
        am2zb_send_error(self, peer, &e);
        return;
    }
    if (wait_job)
        s_wait_for(st, wait_job);
    if (wait_all) {
        /* a composite: its leased steps were stopped with it */
        for (job_t *j = am2z_idmap_first(self->jobs); j; j = am2z_idmap_next(self->jobs))
            if (j->stopped && j->status == JOB_ACTIVE && strcmp(j->session_id, session) == 0)
                s_wait_for(st, j->id);
    }
    st->deadline_us = am2z_clock_mono_us() + self->cfg.stop_grace_ms * 1000;
}

/*  The stop is over: session:cleanup, then the requester's REPLY. */
static void
s_complete(am2z_broker_t *self, stop_t *st)
{
    am2zb_lc_t *lc = self->lc;
    uint64_t abandoned = 0;
    for (char *id = zlistx_first(st->wait); id; id = zlistx_next(st->wait))
        if (am2z_idmap_lookup(self->jobs, id))
            abandoned++;
    am2z_bw_t *w = am2z_bw_new();
    uint8_t *data = NULL;
    size_t size = 0;
    if (w) {
        am2z_bw_map(w, 4);
        am2z_bw_str(w, "session");   am2z_bw_str(w, st->session);
        am2z_bw_str(w, "keepState"); am2z_bw_bool(w, st->keep);
        am2z_bw_str(w, "reason");    am2z_bw_str(w, st->expired ? "expired" : "stopped");
        am2z_bw_str(w, "cancelled"); am2z_bw_uint(w, st->cancelled);
        if (am2z_bw_take(w, &data, &size) == AM2Z_OK)
            am2zb_event(self, "session:cleanup", st->session, data, size);
        free(data);
        data = NULL;
        if (st->peer.ident_size) {
            am2z_bw_map(w, 3);
            am2z_bw_str(w, "ok");        am2z_bw_bool(w, true);
            am2z_bw_str(w, "cancelled"); am2z_bw_uint(w, st->cancelled);
            am2z_bw_str(w, "abandoned"); am2z_bw_uint(w, abandoned);
            if (am2z_bw_take(w, &data, &size) == AM2Z_OK)
                am2zb_send_reply(self, &st->peer, &data, size);
            free(data);
        }
        am2z_bw_destroy(&w);
    }
    if (st->expired)
        lc->expired++;
    AM2Z_LOG(self->log, abandoned ? AM2Z_LOG_WARN : AM2Z_LOG_INFO, S_COMPONENT,
             st->expired ? "session expired" : "session cleaned up",
             AM2Z_KS("session", st->session), AM2Z_KB("keep", st->keep),
             AM2Z_KU("cancelled", st->cancelled), AM2Z_KU("still_running", abandoned));
}

/*  True when every job the stop waits for has ended. */
static bool
s_stop_done(am2z_broker_t *self, stop_t *st)
{
    char *id = zlistx_first(st->wait);
    while (id) {
        if (am2z_idmap_lookup(self->jobs, id))
            return false;
        zlistx_delete(st->wait, zlistx_cursor(st->wait));
        id = zlistx_first(st->wait);
    }
    return true;
}

/* ---------------------------------------------------------------------------
   Expiry and timers (in turn)
   ------------------------------------------------------------------------ */

static void
s_expire_sessions(am2z_broker_t *self, uint64_t now)
{
    am2zb_lc_t *lc = self->lc;
    uint64_t ttl = self->cfg.session_ttl_ms;
    if (!ttl || self->draining)
        return;
    for (size_t n = 0; n < S_EXPIRE_MAX;) {
        sinfo_t *si = zlistx_first(lc->idle);
        if (!si || si->last_ms + ttl > now)
            break;
        if (s_busy(self, si->id)) {
            s_unidle(lc, si);     /* back when its jobs are done */
            continue;
        }
        char *id = strdup(si->id);
        if (!id)
            break;
        session_t *s = am2zb_session_get(self, id, false);
        if (s)
            am2zb_session_remove(self, s);
        s_cleanup(self, id);      /* forgets si */
        s_stage(self, NULL, id, false, true, 0);
        free(id);
        n++;
    }
}

/*  Age retention, and count retention left over (budget per turn). */
static void
s_retain(am2z_broker_t *self, uint64_t now)
{
    am2zb_lc_t *lc = self->lc;
    size_t budget = S_BUDGET;
    for (retain_t *b = zhashx_first(lc->buckets); b && budget;
         b = zhashx_next(lc->buckets)) {
        for (int o = 0; o < 2 && budget; o++) {
            uint64_t keep = s_retain_count(self, o);
            if (b->count[o] > keep) {
                uint64_t over = b->count[o] - keep;
                budget -= s_trim(self, b, o, over > budget ? budget : (size_t)over, 0);
            }
            uint64_t age = s_retain_age(self, o);
            uint64_t oldest = s_oldest_ms(b, o);
            if (budget && oldest != UINT64_MAX && now >= age && oldest <= now - age)
                budget -= s_trim(self, b, o, budget, now - age + 1);
        }
    }
}

static int s_load(am2z_broker_t *self);

void
am2zb_lc_tick(am2z_broker_t *self)
{
    am2zb_lc_t *lc = self->lc;
    if (!lc)
        return;
    uint64_t now = am2z_clock_wall_ms();
    if (zlistx_size(lc->stale)) {
        am2z_store_batch_t *batch = am2zb_batch(self);
        size_t n = zlistx_size(lc->stale);
        for (stale_t *st = zlistx_first(lc->stale); st && batch; st = zlistx_next(lc->stale))
            am2z_batch_del_any(batch, AM2Z_DB_DONE, st->key, st->size);
        if (batch) {
            zlistx_purge(lc->stale);
            AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT,
                     "retention index: older `done` entries of jobs indexed twice deleted",
                     AM2Z_KU("entries", n));
        }
    }
    s_expire_sessions(self, now);
    s_retain(self, now);
    if (zlistx_size(lc->dirty) && now >= lc->flush_at_ms)
        s_flush_info(self, S_INFO_FLUSH_MAX);
}

void
am2zb_lc_committed(am2z_broker_t *self, bool durable)
{
    am2zb_lc_t *lc = self->lc;
    if (!lc)
        return;
    /* The dead-letter count carries over to the next turn (every change to
       the DLQ goes through dlq_delta); it is read from the store again only
       when that costs no wait, i.e. nothing is in flight to the store's
       writer thread (am2z_store_stats waits for it to apply everything),
       so a storm of failing jobs does not wait for a commit every turn. */
    if (durable && lc->dlq_base_known) {
        int64_t n = (int64_t)lc->dlq_base + lc->dlq_delta;
        lc->dlq_base = n > 0 ? (uint64_t)n : 0;
        lc->dlq_delta = 0;
        if (am2z_store_durable(self->store) >= am2z_store_committed(self->store))
            lc->dlq_base_known = false;
    } else {
        lc->dlq_base_known = false;
    }
    if (!durable) {
        /* the turn's writes are gone: what memory says of them too.
           Reload from the committed store (no batch is open now). */
        lc->dlq_resume[0] = '\0';      /* its drops are undone */
        am2z_idmap_purge(lc->results);     /* borrows sessions and buckets: first */
        zlistx_purge(lc->stale);
        zlistx_purge(lc->idle);
        zlistx_purge(lc->dirty);
        am2z_idmap_purge(lc->sessions);
        zhashx_purge(lc->buckets);
        int rc = s_load(self);
        if (rc != AM2Z_OK)
            AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT,
                     "cannot reload session info after a failed commit",
                     AM2Z_KS("error", am2z_strerror(rc)));
    }
    stop_t *st;
    while ((st = zlistx_first(lc->staged))) {
        zlistx_detach_cur(lc->staged);
        if (!durable) {
            if (st->peer.ident_size) {
                am2z_error_t *e = am2zb_resource_error(self);
                am2zb_send_error(self, &st->peer, &e);
            }
            void *item = st;
            s_stop_free(&item);
        } else {
            zlistx_add_end(lc->pending, st);
        }
    }
    uint64_t now_us = am2z_clock_mono_us();
    for (st = zlistx_first(lc->pending); st;) {
        if (s_stop_done(self, st) || now_us >= st->deadline_us) {
            s_complete(self, st);
            zlistx_delete(lc->pending, zlistx_cursor(lc->pending));
            st = zlistx_first(lc->pending);   /* restart: the cursor is gone */
            continue;
        }
        st = zlistx_next(lc->pending);
    }
}

uint64_t
am2zb_lc_next_ms(am2z_broker_t *self)
{
    am2zb_lc_t *lc = self->lc;
    if (!lc)
        return UINT64_MAX;
    uint64_t next = UINT64_MAX;
    uint64_t now_us = am2z_clock_mono_us();
    for (stop_t *st = zlistx_first(lc->pending); st; st = zlistx_next(lc->pending)) {
        uint64_t left = st->deadline_us > now_us ? (st->deadline_us - now_us + 999) / 1000 : 0;
        if (left < next)
            next = left;
    }
    uint64_t now = am2z_clock_wall_ms();
    sinfo_t *si = zlistx_first(lc->idle);
    if (si && self->cfg.session_ttl_ms && !self->draining) {
        uint64_t at = si->last_ms + self->cfg.session_ttl_ms;
        uint64_t left = at > now ? at - now : 0;
        if (left < next)
            next = left;
    }
    if (zlistx_size(lc->stale))
        return 0;
    if (zlistx_size(lc->dirty)) {
        uint64_t left = lc->flush_at_ms > now ? lc->flush_at_ms - now : 0;
        if (left < next)
            next = left;
    }
    for (retain_t *b = zhashx_first(lc->buckets); b; b = zhashx_next(lc->buckets)) {
        for (int o = 0; o < 2; o++) {
            if (b->count[o] > s_retain_count(self, o))
                return 1;         /* count trim left over: soon, never spinning */
            uint64_t oldest = s_oldest_ms(b, o);
            if (oldest == UINT64_MAX)
                continue;
            uint64_t at = oldest + s_retain_age(self, o);
            uint64_t left = at > now ? at - now : 0;
            if (left < next)
                next = left;
        }
    }
    return next;
}

void
am2zb_lc_shutdown(am2z_broker_t *self)
{
    am2zb_lc_t *lc = self->lc;
    if (!lc)
        return;
    if (zlistx_size(lc->dirty)) {
        /* the loop is over: one last batch of its own */
        self->batch = NULL;
        self->batch_rc = AM2Z_OK;
        s_flush_info(self, SIZE_MAX);
        int rc = self->batch ? am2z_store_commit(&self->batch) : self->batch_rc;
        if (rc != AM2Z_OK)
            AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT, "cannot store session info at exit",
                     AM2Z_KS("error", am2z_strerror(rc)));
        self->batch = NULL;
    }
    stop_t *st;
    while ((st = zlistx_first(lc->pending))) {
        zlistx_detach_cur(lc->pending);
        s_complete(self, st);
        void *item = st;
        s_stop_free(&item);
    }
}

/* ---------------------------------------------------------------------------
   Queries
   ------------------------------------------------------------------------ */

static void
s_write_info(am2z_broker_t *self, am2z_bw_t *w, const char *id, const sinfo_t *si)
{
    session_t *s = am2zb_session_get(self, id, false);
    uint64_t queued = s ? zlistx_size(s->lane) : 0;
    uint64_t running = s && s->active ? 1 : 0;
    am2z_bw_map(w, 7);
    am2z_bw_str(w, "id");           am2z_bw_str(w, id);
    am2z_bw_str(w, "created");      am2z_bw_uint(w, si ? si->created_ms : 0);
    am2z_bw_str(w, "lastActivity"); am2z_bw_uint(w, si ? si->last_ms : 0);
    am2z_bw_str(w, "queued");       am2z_bw_uint(w, queued);
    am2z_bw_str(w, "running");      am2z_bw_uint(w, running);
    am2z_bw_str(w, "completed");    am2z_bw_uint(w, si ? si->completed : 0);
    am2z_bw_str(w, "failed");       am2z_bw_uint(w, si ? si->failed : 0);
}

static int
s_strcmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

void
am2zb_lc_query_info(am2z_broker_t *self, const peer_t *peer, const am2z_msg_t *msg,
                    am2z_bw_t *w, bool *answered)
{
    am2zb_lc_t *lc = self->lc;
    if (msg->session) {
        sinfo_t *si = am2z_idmap_lookup(lc->sessions, msg->session);
        if (!si && !am2zb_session_get(self, msg->session, false)) {
            am2z_error_t *e = am2z_error_new(AM2Z_CAT_NOT_FOUND, "NOT_FOUND",
                                             "no session %s", msg->session);
            am2zb_send_error(self, peer, &e);
            *answered = true;
            return;
        }
        s_write_info(self, w, msg->session, si);
        return;
    }
    zhashx_t *set = zhashx_new();
    if (!set) {
        am2z_bw_array(w, 0);
        return;
    }
    for (sinfo_t *si = am2z_idmap_first(lc->sessions); si; si = am2z_idmap_next(lc->sessions))
        zhashx_insert(set, si->id, (void *)1);
    for (session_t *s = am2z_idmap_first(self->sessions); s; s = am2z_idmap_next(self->sessions))
        zhashx_insert(set, s->id, (void *)1);
    zlistx_t *keys = zhashx_keys(set);
    if (keys) {
        zlistx_set_comparator(keys, s_strcmp);
        zlistx_sort(keys);
    }
    am2z_bw_array(w, keys ? (uint32_t)zlistx_size(keys) : 0);
    for (const char *k = keys ? zlistx_first(keys) : NULL; k; k = zlistx_next(keys))
        s_write_info(self, w, k, am2z_idmap_lookup(lc->sessions, k));
    zlistx_destroy(&keys);
    zhashx_destroy(&set);
}

void
am2zb_lc_write_stats(am2z_broker_t *self, am2z_bw_t *w)
{
    am2zb_lc_t *lc = self->lc;
    am2z_store_stats_t st;
    memset(&st, 0, sizeof st);
    am2z_store_stats(self->store, &st);
    am2z_bw_str(w, "store");
    am2z_bw_map(w, AM2Z_DB_COUNT_);
    for (int i = 0; i < AM2Z_DB_COUNT_; i++) {
        am2z_bw_str(w, am2z_db_name((am2z_db_t)i));
        am2z_bw_uint(w, st.entries[i]);
    }
    am2z_bw_str(w, "storeBytes");
    am2z_bw_map(w, 3);
    am2z_bw_str(w, "used");      am2z_bw_uint(w, st.used_bytes);
    am2z_bw_str(w, "allocated"); am2z_bw_uint(w, st.alloc_bytes);
    am2z_bw_str(w, "map");       am2z_bw_uint(w, st.map_size);
    am2z_bw_str(w, "storeWriter");   /* sync + store-writer: its txns, the turns in them */
    am2z_bw_map(w, 3);
    am2z_bw_str(w, "commits"); am2z_bw_uint(w, st.writer_commits);
    am2z_bw_str(w, "turns");   am2z_bw_uint(w, st.writer_sets);
    am2z_bw_str(w, "flushes"); am2z_bw_uint(w, st.syncs);
    am2z_bw_str(w, "dlqDropped");      am2z_bw_uint(w, lc ? lc->dlq_dropped : 0);
    am2z_bw_str(w, "sessionsExpired"); am2z_bw_uint(w, lc ? lc->expired : 0);
    am2z_bw_str(w, "resultsTrimmed");  am2z_bw_uint(w, lc ? lc->trimmed : 0);
    am2z_bw_str(w, "resultsRetained"); am2z_bw_uint(w, lc ? am2z_idmap_size(lc->results) : 0);
}

/* ---------------------------------------------------------------------------
   Loading (start, and after a failed commit)
   ------------------------------------------------------------------------ */

static int
s_load_info(const void *key, size_t key_size, const void *value, size_t value_size,
            void *arg)
{
    am2z_broker_t *self = arg;
    const uint8_t *v = value;
    if (key_size == 0 || key_size > AM2Z_SESSION_ID_MAX || value_size < S_INFO_SIZE
        || v[0] != S_INFO_VERSION)
        return 0;
    char id[AM2Z_SESSION_ID_MAX + 1];
    memcpy(id, key, key_size);
    id[key_size] = '\0';
    sinfo_t *si = s_sinfo_add(self->lc, id, s_get_u64(v + 1), s_get_u64(v + 9));
    if (!si)
        return 2;
    /* a crash can lose the last second of info: the state knows better */
    am2z_record_t rec;
    memset(&rec, 0, sizeof rec);
    if (am2z_store_get_state(self->store, id, &rec) == AM2Z_OK && rec.updated_ms > si->last_ms)
        si->last_ms = rec.updated_ms;
    am2z_record_clear(&rec);
    si->completed = s_get_u64(v + 17);
    si->failed = s_get_u64(v + 25);
    return 0;
}

static int
s_load_state_session(const char *id, void *arg)
{
    am2z_broker_t *self = arg;
    if (am2z_idmap_lookup(self->lc->sessions, id))
        return 0;
    /* stored before session info existed: its envelope's times */
    am2z_record_t rec;
    memset(&rec, 0, sizeof rec);
    uint64_t now = am2z_clock_wall_ms(), created = now, updated = now;
    if (am2z_store_get_state(self->store, id, &rec) == AM2Z_OK) {
        created = rec.created_ms;
        updated = rec.updated_ms;
    }
    am2z_record_clear(&rec);
    return s_sinfo_add(self->lc, id, created, updated) ? 0 : 2;
}

static bool
s_stale_add(am2zb_lc_t *lc, const uint8_t *key, size_t size)
{
    stale_t *st = malloc(sizeof *st + size);
    if (!st)
        return false;
    st->size = size;
    memcpy(st->key, key, size);
    if (!zlistx_add_end(lc->stale, st)) {
        free(st);
        return false;
    }
    return true;
}

/*  One `done` entry into the index in memory. Its session (the value)
    gets info when it has none (its info record was lost or never written:
    it finished jobs, so it exists, and it can be stopped and can expire).
    A job has one entry; should the store hold two (data written by an
    older version), the newer stays and the other is deleted next turn. */
static int
s_load_done(const void *key, size_t key_size, const void *value, size_t value_size,
            void *arg)
{
    am2z_broker_t *self = arg;
    am2zb_lc_t *lc = self->lc;
    size_t np, nj;
    int outcome;
    uint64_t ms;
    const uint8_t *job;
    if (!s_done_parse(key, key_size, &np, &outcome, &ms, &job, &nj))
        return 0;
    retain_t *b = s_bucket_n(lc, key, np, true);
    if (!b)
        return 2;
    char id[AM2Z_SESSION_ID_MAX + 1];
    sinfo_t *si = NULL;
    if (value_size >= 1 && value_size <= AM2Z_SESSION_ID_MAX && !memchr(value, '\0', value_size)) {
        memcpy(id, value, value_size);
        id[value_size] = '\0';
        si = am2z_idmap_lookup(lc->sessions, id);
        if (!si && !(si = s_sinfo_add(lc, id, ms, ms)))
            return 2;
        if (ms > si->last_ms)
            si->last_ms = ms;
    }
    char jid[AM2Z_JOB_ID_MAX + 1];
    if (nj <= AM2Z_JOB_ID_MAX) {
        memcpy(jid, job, nj);
        jid[nj] = '\0';
        rent_t *had = am2z_idmap_lookup(lc->results, jid);
        if (had && s_rent_ms(had) >= ms)
            return s_stale_add(lc, key, key_size) ? 0 : 2;
        if (had) {
            if (!s_stale_add(lc, had->key, had->size))
                return 2;
            s_rent_forget(lc, had);
        }
    }
    return s_rent_add(lc, b, outcome, si, key, key_size, np + 10) ? 0 : 2;
}

static int
s_load(am2z_broker_t *self)
{
    am2zb_lc_t *lc = self->lc;
    int rc = am2z_store_each(self->store, AM2Z_DB_SESSINFO, NULL, 0, s_load_info, self);
    if (rc == AM2Z_OK)
        rc = am2z_store_list_sessions(self->store, s_load_state_session, self);
    if (rc != AM2Z_OK)
        return rc > 0 ? AM2Z_ENOMEM : rc;
    uint64_t now = am2z_clock_wall_ms();
    for (session_t *s = am2z_idmap_first(self->sessions); s; s = am2z_idmap_next(self->sessions))
        if (!am2z_idmap_lookup(lc->sessions, s->id) && !s_sinfo_add(lc, s->id, now, now))
            return AM2Z_ENOMEM;
    zlistx_purge(lc->stale);
    rc = am2z_store_each(self->store, AM2Z_DB_DONE, NULL, 0, s_load_done, self);
    if (rc != AM2Z_OK)
        return rc > 0 ? AM2Z_ENOMEM : rc;
    zlistx_t *idle = zlistx_new();
    if (!idle)
        return AM2Z_ENOMEM;
    zlistx_set_comparator(idle, s_by_last);
    for (sinfo_t *si = am2z_idmap_first(lc->sessions); si; si = am2z_idmap_next(lc->sessions))
        if (!s_busy(self, si->id))
            zlistx_add_end(idle, si);
    zlistx_sort(idle);
    for (sinfo_t *si = zlistx_first(idle); si; si = zlistx_next(idle))
        si->idle_handle = zlistx_add_end(lc->idle, si);
    zlistx_destroy(&idle);
    return AM2Z_OK;
}

int
am2zb_lc_new(am2z_broker_t *self)
{
    am2zb_lc_t *lc = calloc(1, sizeof *lc);
    if (!lc)
        return AM2Z_ENOMEM;
    self->lc = lc;
    lc->sessions = am2z_idmap_new(s_sinfo_free);   /* keys: the sinfo's id */
    lc->idle = zlistx_new();
    lc->buckets = zhashx_new();
    lc->results = am2z_idmap_new(s_rent_free);     /* keys live in their entries */
    lc->stale = zlistx_new();
    lc->staged = zlistx_new();
    lc->pending = zlistx_new();
    lc->dirty = zlistx_new();
    if (!lc->sessions || !lc->idle || !lc->buckets || !lc->results || !lc->stale
        || !lc->staged || !lc->pending || !lc->dirty)
        return AM2Z_ENOMEM;
    zlistx_set_destructor(lc->stale, s_str_free);
    zhashx_set_destructor(lc->buckets, s_bucket_free);
    zlistx_set_comparator(lc->idle, s_by_last);
    zlistx_set_destructor(lc->staged, s_stop_free);
    zlistx_set_destructor(lc->pending, s_stop_free);
    int rc = s_load(self);
    if (rc == AM2Z_OK)
        AM2Z_LOG(self->log, AM2Z_LOG_DEBUG, S_COMPONENT, "sessions and retention loaded",
                 AM2Z_KU("sessions", am2z_idmap_size(lc->sessions)),
                 AM2Z_KU("idle", zlistx_size(lc->idle)),
                 AM2Z_KU("results", am2z_idmap_size(lc->results)));
    am2z_store_stats_t st;
    if (rc == AM2Z_OK && am2z_store_stats(self->store, &st) == AM2Z_OK && st.retired_entries)
        AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT,
                 "data dir of an older version: its on-disk `bysession` index was dropped "
                 "(the index is built in memory from `done`)",
                 AM2Z_KU("entries", st.retired_entries));
    return rc;
}

void
am2zb_lc_destroy(am2z_broker_t *self)
{
    am2zb_lc_t *lc = self->lc;
    if (!lc)
        return;
    am2z_idmap_destroy(&lc->results);     /* borrow sessions and buckets: first */
    zlistx_destroy(&lc->stale);
    zlistx_destroy(&lc->idle);        /* borrowed items: before the sessions */
    zlistx_destroy(&lc->dirty);
    am2z_idmap_destroy(&lc->sessions);
    zhashx_destroy(&lc->buckets);
    zlistx_destroy(&lc->staged);
    zlistx_destroy(&lc->pending);
    free(lc);
    self->lc = NULL;
}
