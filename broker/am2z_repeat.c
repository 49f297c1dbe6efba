/*  am2z_repeat.c — idempotency keys, repeatable jobs and job progress
    (issue 6; BEHAVIOUR.md "Idempotency keys", "Repeatable jobs", "Progress").

    Idempotency. AM2Z_DB_IDEM maps a key (1..128 bytes, never a NUL) to its
    first job: {job, proc, session, at}. Beside each entry a time index
    entry "\0" + at (8 bytes, big endian) + key keeps the keys in the order
    they were first used, so the sweep walks only expired ones: they sort
    before every real key because no key may start with a NUL. A SUBMIT
    with a key looks the key up in the turn's batch (so two SUBMITs of one
    turn see each other). A live entry answers the duplicate with the first
    id (ACCEPTED {dup}) after the commit — by then the first job's record
    is durable too — and the duplicate's peer becomes a fetcher of that job
    (or gets its stored result at once). An entry past idem_window_ms counts
    as absent; a new first use overwrites it and the sweep deletes the old
    index entry.

    Repeatable jobs. A schedule (am2z_repeatrec_t, sealed in AM2Z_DB_REPEATS)
    lives in memory too (self->repeats->table). Each turn (tick) creates one
    job per due schedule through am2zb_submit_job with nobody as the peer,
    and writes the schedule (runs + 1, next, last) in the same batch as the
    job record, or deletes it after its last run: a crash never duplicates
    or loses a run. After a run the next due time is the first one on the
    schedule's grid (next + k * every) later than now, so a broker that fell
    behind or was down does not burst catch-up runs; a load after a restart
    moves an overdue schedule to its first grid time >= now.

    Memory follows the batch; a failed commit reloads the schedules from the
    store (am2zb_repeat_after_commit), so memory and store never disagree.
*/
#include "am2z_broker_int.h"
#include "am2z_jobrec.h"
#include "am2z_repeatrec.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_RUNS_PER_TURN   64        /* due schedules run in one turn */
#define S_SWEEP_MAX       256       /* expired keys deleted in one turn */
#define S_SWEEP_EVERY_MS  1000      /* sweep at most this often (unless behind) */
#define S_EVERY_MAX_MS    ((uint64_t)3650 * 86400000)   /* 10 years */
#define S_INDEX_KEY_MAX   (1 + 8 + 128)

typedef struct {
    char id[AM2Z_ID_LEN + 1];
    am2z_repeatrec_t rec;         /* owned */
} repeat_t;

/*  An answer that waits for the turn's commit. */
typedef enum { ANS_ACCEPT_REPEAT = 0, ANS_DUP, ANS_CANCEL } ans_kind_t;

typedef struct {
    ans_kind_t kind;
    peer_t peer;
    char id[AM2Z_JOB_ID_MAX + 1]; /* repeat id / first job id */
    char session[AM2Z_SESSION_ID_MAX + 1];
    bool repeat;                  /* DUP: the first id is a repeat id */
} answer_t;

typedef struct am2zb_repeats_s am2zb_repeats_t;

struct am2zb_repeats_s {
    zhashx_t *table;              /* repeat id -> repeat_t* (owned) */
    zlistx_t *answers;            /* answer_t* of this turn (owned) */
    uint64_t next_sweep_ms;       /* wall clock of the next idempotency sweep */
    uint64_t min_next_ms;         /* a lower bound of every schedule's next_ms:
                                     before it nothing is due, so neither the
                                     tick nor the timer walks the table */
};

/* ---------------------------------------------------------------------------
   Helpers
   ------------------------------------------------------------------------ */

static void
s_repeat_free(void **item)
{
    repeat_t *r = *item;
    if (r) {
        am2z_repeatrec_clear(&r->rec);
        free(r);
    }
    *item = NULL;
}

static void
s_free(void **item)
{
    free(*item);
    *item = NULL;
}

/*  The first time on the grid next + k * every that is > now (or >= now
    when inclusive). */
static uint64_t
s_advance(uint64_t next, uint64_t every, uint64_t now, bool inclusive)
{
    if (next > now || (inclusive && next == now))
        return next;
    uint64_t k = (now - next) / every + 1;
    if (inclusive && (now - next) % every == 0)
        k--;
    return next + k * every;
}

static void
s_answer(am2z_broker_t *self, ans_kind_t kind, const peer_t *peer, const char *id,
         const char *session, bool repeat)
{
    answer_t *a = calloc(1, sizeof *a);
    if (!a) {
        am2z_error_t *e = am2z_error_new(AM2Z_CAT_RESOURCE, "OUT_OF_MEMORY",
                                         "broker out of memory");
        am2zb_send_error(self, peer, &e);
        return;
    }
    a->kind = kind;
    a->peer = *peer;
    snprintf(a->id, sizeof a->id, "%s", id);
    snprintf(a->session, sizeof a->session, "%s", session ? session : "");
    a->repeat = repeat;
    zlistx_add_end(self->repeats->answers, a);
}

static int
s_put_schedule(am2z_broker_t *self, const repeat_t *r)
{
    am2z_store_batch_t *batch = am2zb_batch(self);
    if (!batch)
        return self->batch_rc;
    uint8_t *data = NULL;
    size_t size = 0;
    int rc = am2z_repeatrec_encode(&r->rec, &data, &size);
    if (rc == AM2Z_OK)
        rc = am2z_batch_put_record(batch, AM2Z_DB_REPEATS, r->id, strlen(r->id),
                                   r->rec.runs + 1, data, size, am2z_clock_wall_ms());
    free(data);
    return rc;
}

static void
s_index_key(uint64_t at, const char *key, uint8_t *out, size_t *size)
{
    size_t len = strlen(key);
    out[0] = 0;
    for (int i = 0; i < 8; i++)
        out[1 + i] = (uint8_t)(at >> (56 - 8 * i));
    memcpy(out + 9, key, len);
    *size = 9 + len;
}

/* ---------------------------------------------------------------------------
   Life cycle
   ------------------------------------------------------------------------ */

static int
s_collect_id(const void *key, size_t key_size, const void *value, size_t value_size,
             void *arg)
{
    (void)value;
    (void)value_size;
    if (key_size == AM2Z_ID_LEN && am2z_job_id_valid(key, key_size)) {
        char *id = strndup(key, key_size);
        if (id)
            zlistx_add_end(arg, id);
    }
    return 0;
}

/*  (Re)loads every stored schedule into the (empty) table. */
static int
s_load(am2z_broker_t *self)
{
    zlistx_t *ids = zlistx_new();
    if (!ids)
        return AM2Z_ENOMEM;
    zlistx_set_destructor(ids, s_free);
    int rc = am2z_store_each(self->store, AM2Z_DB_REPEATS, NULL, 0, s_collect_id, ids);
    uint64_t now = am2z_clock_wall_ms();
    size_t loaded = 0;
    for (char *id = zlistx_first(ids); id && rc == AM2Z_OK; id = zlistx_next(ids)) {
        am2z_record_t raw;
        memset(&raw, 0, sizeof raw);
        repeat_t *r = calloc(1, sizeof *r);
        if (!r) {
            rc = AM2Z_ENOMEM;
            break;
        }
        int grc = am2z_store_get_record(self->store, AM2Z_DB_REPEATS, id, strlen(id), &raw);
        if (grc == AM2Z_OK)
            grc = am2z_repeatrec_decode(raw.data, raw.size, &r->rec);
        am2z_record_clear(&raw);
        if (grc != AM2Z_OK) {
            AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT,
                     "unreadable repeatable job skipped", AM2Z_KS("repeat", id),
                     AM2Z_KS("error", am2z_strerror(grc)));
            free(r);
            continue;
        }
        snprintf(r->id, sizeof r->id, "%s", id);
        r->rec.next_ms = s_advance(r->rec.next_ms, r->rec.every_ms, now, true);
        if (r->rec.next_ms < self->repeats->min_next_ms)
            self->repeats->min_next_ms = r->rec.next_ms;
        if (zhashx_insert(self->repeats->table, r->id, r) != 0) {
            void *item = r;
            s_repeat_free(&item);
            rc = AM2Z_ENOMEM;
            break;
        }
        loaded++;
    }
    zlistx_destroy(&ids);
    if (loaded)
        AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "repeatable jobs loaded",
                 AM2Z_KU("repeats", loaded));
    return rc;
}

int
am2zb_repeat_new(am2z_broker_t *self)
{
    am2zb_repeats_t *r = calloc(1, sizeof *r);
    if (!r)
        return AM2Z_ENOMEM;
    self->repeats = r;
    r->table = zhashx_new();
    r->answers = zlistx_new();
    if (!r->table || !r->answers)
        return AM2Z_ENOMEM;
    zhashx_set_destructor(r->table, s_repeat_free);
    zlistx_set_destructor(r->answers, s_free);
    r->min_next_ms = UINT64_MAX;  /* s_load lowers it */
    return s_load(self);
}

void
am2zb_repeat_destroy(am2z_broker_t *self)
{
    am2zb_repeats_t *r = self->repeats;
    if (!r)
        return;
    zhashx_destroy(&r->table);
    zlistx_destroy(&r->answers);
    free(r);
    self->repeats = NULL;
}

/* ---------------------------------------------------------------------------
   SUBMIT: idempotency keys and new schedules
   ------------------------------------------------------------------------ */

void
am2zb_idem_put(am2z_broker_t *self, const char *key, const char *id, const char *proc,
               const char *session, bool repeat)
{
    am2z_store_batch_t *batch = am2zb_batch(self);
    if (!batch)
        return;                   /* the turn fails: nothing of it is kept */
    am2z_idemrec_t rec;
    memset(&rec, 0, sizeof rec);
    snprintf(rec.id, sizeof rec.id, "%s", id);
    snprintf(rec.proc, sizeof rec.proc, "%s", proc);
    snprintf(rec.session, sizeof rec.session, "%s", session);
    rec.at_ms = am2z_clock_wall_ms();
    rec.repeat = repeat;
    uint8_t *data = NULL;
    size_t size = 0;
    uint8_t index[S_INDEX_KEY_MAX];
    size_t index_size = 0;
    s_index_key(rec.at_ms, key, index, &index_size);
    int rc = am2z_idemrec_encode(&rec, &data, &size);
    if (rc == AM2Z_OK)
        rc = am2z_batch_put_raw(batch, AM2Z_DB_IDEM, key, strlen(key), data, size);
    if (rc == AM2Z_OK)
        rc = am2z_batch_put_raw(batch, AM2Z_DB_IDEM, index, index_size, "", 0);
    free(data);
    if (rc != AM2Z_OK)
        AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT, "cannot store idempotency key",
                 AM2Z_KS("job", id), AM2Z_KS("error", am2z_strerror(rc)));
}

/*  A live entry for key, read inside the batch. Returns AM2Z_OK (*rec set),
    AM2Z_ENOTFOUND (none, or expired), or a store error. */
static int
s_idem_get(am2z_broker_t *self, am2z_store_batch_t *batch, const char *key,
           am2z_idemrec_t *rec)
{
    void *value = NULL;
    size_t size = 0;
    int rc = am2z_batch_get_raw(batch, AM2Z_DB_IDEM, key, strlen(key), &value, &size);
    if (rc == AM2Z_OK) {
        rc = am2z_idemrec_decode(value, size, rec);
        if (rc != AM2Z_OK) {
            AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT,
                     "unreadable idempotency entry ignored", AM2Z_KS("key", key));
            rc = AM2Z_ENOTFOUND;
        }
    }
    free(value);
    if (rc == AM2Z_OK && rec->at_ms + self->cfg.idem_window_ms <= am2z_clock_wall_ms())
        rc = AM2Z_ENOTFOUND;      /* past its window: a new first use */
    return rc;
}

static void
s_refuse(am2z_broker_t *self, const peer_t *peer, const char *field, const char *value,
         const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void
s_refuse(am2z_broker_t *self, const peer_t *peer, const char *field, const char *value,
         const char *fmt, ...)
{
    char reason[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    am2z_error_t *e = am2z_error_validation(field, value, reason);
    am2zb_send_error(self, peer, &e);
}

/*  A new repeatable job: validated, stored, answered after the commit. */
static void
s_new_schedule(am2z_broker_t *self, const peer_t *peer, proc_t *proc, am2z_msg_t *msg)
{
    uint64_t now = am2z_clock_wall_ms();
    char value[32];
    if (msg->every_ms > S_EVERY_MAX_MS) {
        snprintf(value, sizeof value, "%" PRIu64, msg->every_ms);
        s_refuse(self, peer, "every", value, "must be 1..%" PRIu64 " ms (10 years)",
                 S_EVERY_MAX_MS);
        return;
    }
    if (msg->start_ms > now + S_EVERY_MAX_MS || msg->delay_ms > S_EVERY_MAX_MS) {
        snprintf(value, sizeof value, "%" PRIu64,
                 msg->start_ms > now + S_EVERY_MAX_MS ? msg->start_ms : msg->delay_ms);
        s_refuse(self, peer, msg->start_ms > now + S_EVERY_MAX_MS ? "start" : "delay", value,
                 "the first run must be within 10 years");
        return;
    }
    am2z_store_batch_t *batch = am2zb_batch(self);
    repeat_t *r = calloc(1, sizeof *r);
    if (!batch || !r || am2z_id_new(r->id) != AM2Z_OK
        || !(r->rec.proc = strdup(proc->name)) || !(r->rec.session = strdup(msg->session))) {
        if (r)
            am2z_repeatrec_clear(&r->rec);
        free(r);
        am2z_error_t *e = am2zb_resource_error(self);
        am2zb_send_error(self, peer, &e);
        return;
    }
    r->rec.state = msg->state;
    r->rec.state_size = msg->state_size;
    msg->state = NULL;
    r->rec.prio = msg->priority;
    r->rec.timeout_ms = msg->timeout_ms;
    r->rec.every_ms = msg->every_ms;
    r->rec.limit = msg->limit;
    r->rec.next_ms = (msg->start_ms ? msg->start_ms : now) + msg->delay_ms;
    r->rec.created_ms = now;
    if (r->rec.next_ms < self->repeats->min_next_ms)
        self->repeats->min_next_ms = r->rec.next_ms;
    int rc = s_put_schedule(self, r);
    if (rc != AM2Z_OK || zhashx_insert(self->repeats->table, r->id, r) != 0) {
        AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT, "cannot store repeatable job",
                 AM2Z_KS("session", msg->session), AM2Z_KS("error", am2z_strerror(rc)));
        if (rc == AM2Z_OK)
            am2z_batch_del(batch, AM2Z_DB_REPEATS, r->id, strlen(r->id));
        void *item = r;
        s_repeat_free(&item);
        am2z_error_t *e = am2zb_resource_error(self);
        am2zb_send_error(self, peer, &e);
        return;
    }
    if (msg->idem_key)
        am2zb_idem_put(self, msg->idem_key, r->id, proc->name, msg->session, true);
    s_answer(self, ANS_ACCEPT_REPEAT, peer, r->id, msg->session, true);
    AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "repeatable job created",
             AM2Z_KS("repeat", r->id), AM2Z_KS("proc", proc->name),
             AM2Z_KS("session", msg->session), AM2Z_KU("every_ms", r->rec.every_ms),
             AM2Z_KU("limit", r->rec.limit), AM2Z_KU("next", r->rec.next_ms));
}

bool
am2zb_repeat_on_submit(am2z_broker_t *self, const peer_t *peer, proc_t *proc,
                       am2z_msg_t *msg)
{
    if (!msg->idem_key && !msg->every_ms)
        return false;
    if (msg->idem_key) {
        am2z_store_batch_t *batch = am2zb_batch(self);
        if (!batch) {
            am2z_error_t *e = am2zb_resource_error(self);
            am2zb_send_error(self, peer, &e);
            return true;
        }
        am2z_idemrec_t first;
        int rc = s_idem_get(self, batch, msg->idem_key, &first);
        if (rc == AM2Z_OK) {
            bool repeat = msg->every_ms > 0;
            if (strcmp(first.proc, proc->name) != 0 || strcmp(first.session, msg->session) != 0
                || first.repeat != repeat) {
                s_refuse(self, peer, "idem", msg->idem_key,
                         "idempotency key '%s' was first used by %s %s (processor %s, "
                         "session %s); this submit is %s of processor %s in session %s",
                         msg->idem_key, first.repeat ? "repeatable job" : "job", first.id,
                         first.proc, first.session, repeat ? "a repeatable job" : "a job",
                         proc->name, msg->session);
                return true;
            }
            s_answer(self, ANS_DUP, peer, first.id, first.session, first.repeat);
            AM2Z_LOG(self->log, AM2Z_LOG_DEBUG, S_COMPONENT, "idempotent duplicate",
                     AM2Z_KS("key", msg->idem_key), AM2Z_KS("job", first.id));
            return true;
        }
        if (rc != AM2Z_ENOTFOUND) {
            am2z_error_t *e = am2zb_error_from_rc(rc, "idempotency key");
            am2zb_send_error(self, peer, &e);
            return true;
        }
    }
    if (!msg->every_ms)
        return false;             /* a first use: the job is created as usual */
    s_new_schedule(self, peer, proc, msg);
    return true;
}

/* ---------------------------------------------------------------------------
   REPEAT cancel, STOP_SESSION
   ------------------------------------------------------------------------ */

/*  Deletes a schedule (store and memory) in the turn's batch. */
static int
s_remove(am2z_broker_t *self, repeat_t *r)
{
    am2z_store_batch_t *batch = am2zb_batch(self);
    if (!batch)
        return self->batch_rc;
    int rc = am2z_batch_del(batch, AM2Z_DB_REPEATS, r->id, strlen(r->id));
    if (rc == AM2Z_ENOTFOUND)
        rc = AM2Z_OK;
    if (rc == AM2Z_OK)
        zhashx_delete(self->repeats->table, r->id);
    return rc;
}

void
am2zb_repeat_on_command(am2z_broker_t *self, const peer_t *peer, am2z_msg_t *msg)
{
    /* the codec guarantees op == "cancel" and a job id */
    repeat_t *r = zhashx_lookup(self->repeats->table, msg->job);
    if (!r) {
        am2z_error_t *e = am2z_error_new(AM2Z_CAT_NOT_FOUND, "NOT_FOUND",
                                         "no repeatable job %s", msg->job);
        am2zb_send_error(self, peer, &e);
        return;
    }
    char id[AM2Z_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", r->id);
    int rc = s_remove(self, r);
    if (rc != AM2Z_OK) {
        am2z_error_t *e = am2zb_error_from_rc(rc, "repeat cancel");
        am2zb_send_error(self, peer, &e);
        return;
    }
    s_answer(self, ANS_CANCEL, peer, id, NULL, true);
    AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "repeatable job cancelled",
             AM2Z_KS("repeat", id));
}

void
am2zb_repeat_stop_session(am2z_broker_t *self, const char *session)
{
    repeat_t *doomed[64];
    size_t n;
    do {
        n = 0;
        for (repeat_t *r = zhashx_first(self->repeats->table); r && n < 64;
             r = zhashx_next(self->repeats->table))
            if (strcmp(r->rec.session, session) == 0)
                doomed[n++] = r;
        for (size_t i = 0; i < n; i++) {
            AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT,
                     "repeatable job cancelled: session stopped",
                     AM2Z_KS("repeat", doomed[i]->id), AM2Z_KS("session", session));
            if (s_remove(self, doomed[i]) != AM2Z_OK)
                return;           /* the batch failed: the turn is lost anyway */
        }
    } while (n == 64);
}

/* ---------------------------------------------------------------------------
   Tick: due runs and the idempotency sweep
   ------------------------------------------------------------------------ */

/*  One run of a due schedule: a job created like a SUBMIT from nobody. */
static void
s_run(am2z_broker_t *self, repeat_t *r, uint64_t now)
{
    uint64_t due = r->rec.next_ms;
    proc_t *proc = am2zb_proc_get(self, r->rec.proc, true);
    job_t *job = NULL;
    if (proc) {
        am2z_msg_t msg;
        am2z_msg_init(&msg, AM2Z_CMD_SUBMIT);
        msg.processor = r->rec.proc;
        msg.session = r->rec.session;
        msg.priority = r->rec.prio;
        msg.timeout_ms = r->rec.timeout_ms;
        if (r->rec.state && (msg.state = malloc(r->rec.state_size))) {
            memcpy(msg.state, r->rec.state, r->rec.state_size);
            msg.state_size = r->rec.state_size;
        }
        if (!r->rec.state || msg.state) {
            peer_t nobody;
            memset(&nobody, 0, sizeof nobody);
            job = am2zb_submit_job(self, &nobody, proc, &msg);
        }
        free(msg.state);          /* NULL when the job took it */
    }
    r->rec.next_ms = s_advance(due, r->rec.every_ms, now, false);
    if (!job) {
        /* a queue limit or the store refused it: this run is skipped */
        AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT, "repeatable job run skipped",
                 AM2Z_KS("repeat", r->id), AM2Z_KS("session", r->rec.session),
                 AM2Z_KU("next", r->rec.next_ms));
        s_put_schedule(self, r);
        return;
    }
    r->rec.runs++;
    snprintf(r->rec.last, sizeof r->rec.last, "%s", job->id);
    AM2Z_LOG(self->log, AM2Z_LOG_DEBUG, S_COMPONENT, "repeatable job run",
             AM2Z_KS("repeat", r->id), AM2Z_KS("job", job->id), AM2Z_KU("run", r->rec.runs),
             AM2Z_KU("limit", r->rec.limit));
    if (r->rec.limit && r->rec.runs >= r->rec.limit) {
        AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "repeatable job finished its runs",
                 AM2Z_KS("repeat", r->id), AM2Z_KU("runs", r->rec.runs));
        s_remove(self, r);
        return;
    }
    int rc = s_put_schedule(self, r);
    if (rc != AM2Z_OK)
        AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT, "cannot store repeatable job",
                 AM2Z_KS("repeat", r->id), AM2Z_KS("error", am2z_strerror(rc)));
}

typedef struct {
    uint64_t cutoff;              /* entries first used before this expired */
    zlistx_t *keys;               /* expired index keys (owned copies) */
} sweep_t;

typedef struct {
    size_t size;
    uint8_t key[S_INDEX_KEY_MAX];
} index_key_t;

static int
s_collect_expired(const void *key, size_t key_size, const void *value, size_t value_size,
                  void *arg)
{
    (void)value;
    (void)value_size;
    sweep_t *s = arg;
    const uint8_t *k = key;
    if (key_size < 10 || key_size > S_INDEX_KEY_MAX || k[0] != 0)
        return 1;                 /* past the index: real keys from here */
    uint64_t at = 0;
    for (int i = 0; i < 8; i++)
        at = (at << 8) | k[1 + i];
    if (at >= s->cutoff || zlistx_size(s->keys) >= S_SWEEP_MAX)
        return 1;
    index_key_t *copy = malloc(sizeof *copy);
    if (!copy)
        return 1;
    copy->size = key_size;
    memcpy(copy->key, key, key_size);
    zlistx_add_end(s->keys, copy);
    return 0;
}

/*  Deletes up to S_SWEEP_MAX keys past their window. */
static void
s_sweep(am2z_broker_t *self, uint64_t now)
{
    am2zb_repeats_t *rp = self->repeats;
    if (now < rp->next_sweep_ms)
        return;
    rp->next_sweep_ms = now + S_SWEEP_EVERY_MS;
    if (now <= self->cfg.idem_window_ms)
        return;
    sweep_t s = { now - self->cfg.idem_window_ms, zlistx_new() };
    if (!s.keys)
        return;
    zlistx_set_destructor(s.keys, s_free);
    am2z_store_each(self->store, AM2Z_DB_IDEM, NULL, 0, s_collect_expired, &s);
    size_t n = zlistx_size(s.keys);
    am2z_store_batch_t *batch = n ? am2zb_batch(self) : NULL;
    for (index_key_t *ix = zlistx_first(s.keys); ix && batch; ix = zlistx_next(s.keys)) {
        uint64_t at = 0;
        for (int i = 0; i < 8; i++)
            at = (at << 8) | ix->key[1 + i];
        char key[AM2Z_NAME_MAX + 1];
        size_t len = ix->size - 9;
        memcpy(key, ix->key + 9, len);
        key[len] = '\0';
        void *value = NULL;
        size_t size = 0;
        am2z_idemrec_t rec;
        if (am2z_batch_get_raw(batch, AM2Z_DB_IDEM, key, len, &value, &size) == AM2Z_OK
            && (am2z_idemrec_decode(value, size, &rec) != AM2Z_OK || rec.at_ms == at))
            am2z_batch_del(batch, AM2Z_DB_IDEM, key, len);   /* else reused since */
        free(value);
        am2z_batch_del(batch, AM2Z_DB_IDEM, ix->key, ix->size);
    }
    if (n >= S_SWEEP_MAX)
        rp->next_sweep_ms = now;  /* more to do: next turn */
    if (n)
        AM2Z_LOG(self->log, AM2Z_LOG_DEBUG, S_COMPONENT, "idempotency keys expired",
                 AM2Z_KU("keys", n));
    zlistx_destroy(&s.keys);
}

void
am2zb_repeat_tick(am2z_broker_t *self)
{
    uint64_t now = am2z_clock_wall_ms();
    s_sweep(self, now);
    if (self->draining)
        return;                   /* no new work while stopping; runs wait */
    am2zb_repeats_t *rp = self->repeats;
    if (now < rp->min_next_ms)
        return;                   /* nothing due: no walk */
    repeat_t *due[S_RUNS_PER_TURN];
    size_t n = 0;
    for (repeat_t *r = zhashx_first(rp->table); r && n < S_RUNS_PER_TURN;
         r = zhashx_next(rp->table))
        if (r->rec.next_ms <= now)
            due[n++] = r;
    for (size_t i = 0; i < n; i++)
        s_run(self, due[i], now);  /* advances next_ms or deletes the schedule */
    uint64_t min = UINT64_MAX;
    for (repeat_t *r = zhashx_first(rp->table); r; r = zhashx_next(rp->table))
        if (r->rec.next_ms < min)
            min = r->rec.next_ms;
    rp->min_next_ms = min;
}

void
am2zb_repeat_timer(am2z_broker_t *self, uint64_t now_ms, uint64_t *next_ms)
{
    if (!self->repeats || self->draining)
        return;                   /* draining: no run is created, nothing to wake for */
    uint64_t at = self->repeats->min_next_ms;   /* a lower bound: may wake early */
    if (at == UINT64_MAX)
        return;
    uint64_t left = at > now_ms ? at - now_ms : 0;
    if (left < *next_ms)
        *next_ms = left;
}

/* ---------------------------------------------------------------------------
   After the commit
   ------------------------------------------------------------------------ */

/*  A duplicate's answer: ACCEPTED {job: first, dup}, then the first job's
    RESULT — now if it is stored, else when it finishes (as a fetcher).
    When the first job is neither pending nor stored any more (its result
    was deleted), the SUBMIT is refused instead (not_found): an ACCEPTED
    would promise a RESULT that cannot come. */
static void
s_answer_dup(am2z_broker_t *self, const answer_t *a)
{
    job_t *job = a->repeat ? NULL : am2z_idmap_lookup(self->jobs, a->id);
    if (job && job->stopped)
        job = NULL;
    am2z_msg_t r;
    am2z_msg_init(&r, AM2Z_CMD_INVALID);
    if (!a->repeat && !job) {
        am2z_record_t rec;
        memset(&rec, 0, sizeof rec);
        int rc = am2z_store_get_record(self->store, AM2Z_DB_RESULTS, a->id, strlen(a->id),
                                       &rec);
        if (rc == AM2Z_OK)
            rc = am2z_msg_decode(AM2Z_CMD_RESULT, rec.data, rec.size, rec.size + 1, &r,
                                 NULL, 0);
        am2z_record_clear(&rec);
        if (rc != AM2Z_OK) {
            am2z_error_t *e = am2z_error_new(AM2Z_CAT_NOT_FOUND, "NOT_FOUND",
                                             "idempotency key names job %s, whose result "
                                             "is no longer stored", a->id);
            am2zb_send_error(self, &a->peer, &e);
            am2z_msg_clear(&r);
            return;
        }
    }
    am2z_msg_t acc;
    am2z_msg_init(&acc, AM2Z_CMD_ACCEPTED);
    acc.job = (char *)a->id;
    acc.session = (char *)a->session;
    acc.dup = true;
    acc.repeat = a->repeat;
    am2zb_send_client(self, &a->peer, &acc);
    if (job)
        am2zb_job_add_fetcher(job, &a->peer, false);   /* a duplicate SUBMIT: its own RESULT */
    else if (r.cmd == AM2Z_CMD_RESULT)
        am2zb_send_client(self, &a->peer, &r);
    am2z_msg_clear(&r);
}

void
am2zb_repeat_after_commit(am2z_broker_t *self, bool durable)
{
    am2zb_repeats_t *rp = self->repeats;
    answer_t *a;
    while ((a = zlistx_first(rp->answers))) {
        zlistx_detach_cur(rp->answers);
        if (!durable) {
            am2z_error_t *e = am2zb_resource_error(self);
            am2zb_send_error(self, &a->peer, &e);
        } else if (a->kind == ANS_DUP) {
            s_answer_dup(self, a);
        } else if (a->kind == ANS_ACCEPT_REPEAT) {
            am2z_msg_t acc;
            am2z_msg_init(&acc, AM2Z_CMD_ACCEPTED);
            acc.job = a->id;
            acc.session = a->session;
            acc.repeat = true;
            am2zb_send_client(self, &a->peer, &acc);
        } else {
            uint8_t *data = NULL;
            size_t size = 0;
            am2z_bw_t *w = am2z_bw_new();
            if (w) {
                am2z_bw_map(w, 3);
                am2z_bw_str(w, "job"); am2z_bw_str(w, a->id);
                am2z_bw_str(w, "op");  am2z_bw_str(w, "cancel");
                am2z_bw_str(w, "ok");  am2z_bw_bool(w, true);
            }
            if (w && am2z_bw_take(w, &data, &size) == AM2Z_OK) {
                am2z_msg_t reply;
                am2z_msg_init(&reply, AM2Z_CMD_REPLY);
                reply.data = data;
                reply.data_size = size;
                reply.success = true;
                am2zb_send_client(self, &a->peer, &reply);
                am2z_msg_clear(&reply);
            }
            am2z_bw_destroy(&w);
        }
        free(a);
    }
    if (!durable) {
        /* memory ran ahead of the store: start again from what is stored */
        zhashx_purge(rp->table);
        rp->min_next_ms = UINT64_MAX;  /* s_load lowers it */
        if (s_load(self) != AM2Z_OK)
            AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT,
                     "cannot reload repeatable jobs after a failed commit");
    }
}

/* ---------------------------------------------------------------------------
   QUERY what=repeats
   ------------------------------------------------------------------------ */

static int
s_strcmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

void
am2zb_repeat_query(am2z_broker_t *self, const am2z_msg_t *msg, struct am2z_bw_t *w)
{
    zlistx_t *ids = zlistx_new();
    if (ids) {
        zlistx_set_comparator(ids, s_strcmp);
        for (repeat_t *r = zhashx_first(self->repeats->table); r;
             r = zhashx_next(self->repeats->table))
            if (!msg->session || strcmp(msg->session, r->rec.session) == 0)
                zlistx_add_end(ids, r->id);
        zlistx_sort(ids);
    }
    am2z_bw_array(w, ids ? (uint32_t)zlistx_size(ids) : 0);
    for (const char *id = ids ? zlistx_first(ids) : NULL; id; id = zlistx_next(ids)) {
        const repeat_t *r = zhashx_lookup(self->repeats->table, id);
        am2z_bw_map(w, 8 + (r->rec.last[0] ? 1u : 0u));
        am2z_bw_str(w, "id");      am2z_bw_str(w, r->id);
        am2z_bw_str(w, "proc");    am2z_bw_str(w, r->rec.proc);
        am2z_bw_str(w, "session"); am2z_bw_str(w, r->rec.session);
        am2z_bw_str(w, "every");   am2z_bw_uint(w, r->rec.every_ms);
        am2z_bw_str(w, "limit");   am2z_bw_uint(w, r->rec.limit);
        am2z_bw_str(w, "runs");    am2z_bw_uint(w, r->rec.runs);
        am2z_bw_str(w, "next");    am2z_bw_uint(w, r->rec.next_ms);
        am2z_bw_str(w, "created"); am2z_bw_uint(w, r->rec.created_ms);
        if (r->rec.last[0]) {
            am2z_bw_str(w, "last"); am2z_bw_str(w, r->rec.last);
        }
    }
    zlistx_destroy(&ids);
}

/* ---------------------------------------------------------------------------
   Progress
   ------------------------------------------------------------------------ */

void
am2zb_progress_event(am2z_broker_t *self, job_t *job, const am2z_msg_t *msg)
{
    (void)self;
    uint64_t n = 0;
    if (strcmp(msg->name, "job:progress") == 0 && msg->data
        && am2z_progress_peek(msg->data, msg->data_size, &n)) {
        job->progress = n;
        job->has_progress = true;
    }
}
