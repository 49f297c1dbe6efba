/*  am2z_ctx.c — the processor context, and running one job on an actor
    thread (am2z_pool.c runs the threads; am2z_worker_priv.h has the
    protocol between them and the main thread).

    An actor runs one job at a time: it decodes the input state, builds a
    ctx on its stack, calls the processor, applies the recorded changes and
    encodes the whole DONE body, so the worker's main thread only forwards
    bytes. Events are encoded here too and queued for the main thread as
    they are emitted; the queue keeps order, so a job's events reach the
    broker before its DONE.
*/
#include "am2z_worker_priv.h"

#include "am2z_clock.h"
#include "am2z_codec.h"
#include "am2z_mpcheck.h"

#include <stdlib.h>
#include <string.h>


/* ---------------------------------------------------------------------------
   Context accessors
   ------------------------------------------------------------------------ */

const am2z_state_t *
am2z_ctx_state(const am2z_ctx_t *ctx)
{
    return ctx ? ctx->state : NULL;
}

am2z_changes_t *
am2z_ctx_changes(am2z_ctx_t *ctx)
{
    return ctx ? ctx->changes : NULL;
}

int
am2z_ctx_fail(am2z_ctx_t *ctx, am2z_error_t **error_p)
{
    if (!ctx)
        return AM2Z_EFAILED;
    ctx->failed = true;
    if (error_p && *error_p) {
        am2z_error_destroy(&ctx->error);    /* the last failure wins */
        ctx->error = *error_p;
        *error_p = NULL;
    }
    return AM2Z_EFAILED;
}

bool
am2z_ctx_cancelled(const am2z_ctx_t *ctx)
{
    return ctx && ctx->cancel && atomic_load(ctx->cancel);
}

const char *
am2z_ctx_processor(const am2z_ctx_t *ctx)
{
    return ctx ? ctx->processor : NULL;
}

const char *
am2z_ctx_session_id(const am2z_ctx_t *ctx)
{
    return ctx ? ctx->session : NULL;
}

const char *
am2z_ctx_execution_id(const am2z_ctx_t *ctx)
{
    return ctx ? ctx->job_id : NULL;
}

uint32_t
am2z_ctx_attempt(const am2z_ctx_t *ctx)
{
    return ctx ? ctx->attempt : 0;
}

uint32_t
am2z_ctx_call_depth(const am2z_ctx_t *ctx)
{
    return ctx ? ctx->depth : 0;
}

uint64_t
am2z_ctx_started_at(const am2z_ctx_t *ctx)
{
    return ctx ? ctx->started_ms : 0;
}

void *
am2z_ctx_arg(const am2z_ctx_t *ctx)
{
    return ctx ? ctx->arg : NULL;
}

am2z_log_t *
am2z_ctx_log(const am2z_ctx_t *ctx)
{
    return ctx ? ctx->log : NULL;
}

/* ---------------------------------------------------------------------------
   Events
   ------------------------------------------------------------------------ */

/*  The worker's host: the actor thread, which sends to the main thread
    through the pool's mailbox. */
typedef struct {
    am2zw_thread_t *t;
} s_pipe_host_t;

static int
s_emit(am2z_ctx_t *ctx, const char *event, const uint8_t *data, size_t size)
{
    if (!ctx->host || !ctx->host->emit)
        return AM2Z_OK;            /* nobody listens: nothing to deliver */
    int rc = ctx->host->emit(ctx->host->host, ctx, event, data, size, ctx->seq + 1);
    if (rc == AM2Z_OK)
        ctx->seq++;
    return rc;
}

/*  The worker's host: events become EVENT bodies sent to the main thread
    (which forwards them to the broker ahead of the DONE). */
static int
s_pipe_emit(void *host, const am2z_ctx_t *ctx, const char *event,
            const uint8_t *data, size_t size, uint64_t seq)
{
    /*  The message borrows every pointer (encoding only reads them), so it
        is never cleared. */
    am2z_msg_t ev;
    am2z_msg_init(&ev, AM2Z_CMD_EVENT);
    ev.name = (char *)event;
    ev.job = (char *)ctx->job_id;
    ev.session = (char *)ctx->session;
    ev.processor = (char *)ctx->processor;
    ev.attempt = ctx->attempt;
    ev.ts_ms = am2z_clock_wall_ms();
    ev.seq = seq;
    ev.data = (uint8_t *)data;
    ev.data_size = data ? size : 0;

    uint8_t *body = NULL;
    size_t body_size = 0;
    int rc = am2z_msg_encode(&ev, &body, &body_size);
    if (rc != AM2Z_OK) {
        AM2Z_LOG(ctx->log, AM2Z_LOG_WARN, "worker", "event not encoded",
                 AM2Z_KS("event", event), AM2Z_KS("job", ctx->job_id),
                 AM2Z_KS("error", am2z_strerror(rc)));
        return rc;
    }
    s_pipe_host_t *h = host;
    return am2zw_pool_send(h->t, AM2ZW_EVENT, &body, body_size);
}

/*  A failed call result (the call never got an answer). */
static am2z_result_t *
s_call_failed(const am2z_ctx_t *ctx, const char *name, am2z_error_t *error)
{
    am2z_result_t *r = am2z_result_new();
    if (!r) {
        am2z_error_destroy(&error);
        return NULL;
    }
    snprintf(r->processor, sizeof r->processor, "%s", name);
    snprintf(r->session_id, sizeof r->session_id, "%s", ctx->session);
    r->success = false;
    r->error = error ? error : am2z_error_resource("memory", 0, 0);
    return r;
}

/*  The worker's nested call: CALL {job, proc, state, depth} to the main thread
    (the main thread numbers it and forwards it to the broker, which runs
    the callee as a job of this session), then wait for ["RESULT", body].
    Cancellation of the caller ends the wait with a failed result. */
static int
s_pipe_call(void *host, am2z_ctx_t *ctx, const char *name, const am2z_state_t *state,
            am2z_result_t **out)
{
    s_pipe_host_t *h = host;
    *out = NULL;
    am2z_msg_t call;
    am2z_msg_init(&call, AM2Z_CMD_CALL);
    call.req = 1;                           /* the main thread sets the real one */
    call.job = (char *)ctx->job_id;
    call.processor = (char *)name;
    call.state = (uint8_t *)am2z_state_data(state);
    call.state_size = am2z_state_size(state);
    call.call_depth = ctx->depth + 1;
    uint8_t *body = NULL;
    size_t size = 0;
    int rc = am2z_msg_encode(&call, &body, &size);   /* borrowed: never cleared */
    if (rc == AM2Z_OK)
        rc = am2zw_pool_send(h->t, AM2ZW_CALL, &body, size);
    free(body);
    if (rc != AM2Z_OK)
        return rc == AM2Z_ENOMEM ? rc : AM2Z_ESTATE;
    uint8_t *rbody = NULL;
    size_t rsize = 0;
    if (am2zw_pool_wait_result(h->t, ctx->cancel, &rbody, &rsize) != AM2Z_OK) {
        am2z_error_t *e = am2z_error_new(AM2Z_CAT_EXECUTION, "CANCELLED",
                                         "call of %s cancelled", name);
        *out = s_call_failed(ctx, name, e);
        return *out ? AM2Z_OK : AM2Z_ENOMEM;
    }
    am2z_msg_t r;
    am2z_msg_init(&r, AM2Z_CMD_INVALID);
    int drc = am2z_msg_decode(AM2Z_CMD_RESULT, rbody, rsize, rsize + 1, &r, NULL, 0);
    free(rbody);
    if (drc != AM2Z_OK) {
        am2z_error_t *e = am2z_error_new(AM2Z_CAT_PROTOCOL, "PROTOCOL_ERROR",
                                         "call of %s: unreadable RESULT", name);
        *out = s_call_failed(ctx, name, e);
        return *out ? AM2Z_OK : AM2Z_ENOMEM;
    }
    am2z_result_t *res = am2z_result_new();
    if (!res) {
        am2z_msg_clear(&r);
        return AM2Z_ENOMEM;
    }
    snprintf(res->job_id, sizeof res->job_id, "%s", r.job ? r.job : "");
    snprintf(res->processor, sizeof res->processor, "%s", name);
    snprintf(res->session_id, sizeof res->session_id, "%s", ctx->session);
    res->attempt = r.attempt;
    res->exec_us = r.exec_us;
    res->started_at_ms = r.started_at_ms;
    res->success = r.success && r.state
                   && am2z_state_decode(r.state, r.state_size, &res->state) == AM2Z_OK;
    if (!res->success) {
        res->error = r.error ? r.error
                             : am2z_error_new(AM2Z_CAT_PROTOCOL, "PROTOCOL_ERROR",
                                              "call of %s: RESULT without a state", name);
        r.error = NULL;
    }
    am2z_msg_clear(&r);
    *out = res;
    return AM2Z_OK;
}

int
am2z_ctx_select(am2z_ctx_t *ctx, const char *key)
{
    if (!ctx || !key || strlen(key) > AM2Z_NAME_MAX)
        return AM2Z_EINVAL;
    snprintf(ctx->selected, sizeof ctx->selected, "%s", key);
    ctx->has_selected = true;
    return AM2Z_OK;
}

int
am2z_ctx_call(am2z_ctx_t *ctx, const char *name, const am2z_state_t *state,
              am2z_result_t **out)
{
    if (!ctx || !name || !out)
        return AM2Z_EINVAL;
    *out = NULL;
    if (!ctx->host || !ctx->host->call)
        return AM2Z_ESTATE;
    return ctx->host->call(ctx->host->host, ctx, name, state ? state : ctx->state, out);
}

int
am2z_ctx_emit(am2z_ctx_t *ctx, const char *event,
              const uint8_t *data, size_t size)
{
    if (!ctx || !event || !am2z_name_valid(event, strnlen(event, AM2Z_NAME_MAX + 1)))
        return AM2Z_EINVAL;
    if (!data && size)
        return AM2Z_EINVAL;
    if (data && am2z_msgpack_check(data, size, AM2Z_CODEC_MAX_DEPTH) != AM2Z_OK)
        return AM2Z_EPROTO;
    return s_emit(ctx, event, data, size);
}

/*  msgpack {"progress": n}: fixmap(1), fixstr(8) "progress", then the
    smallest unsigned encoding of n. Hand-packed: msgpack-c stays in the
    codec files. */
static size_t
s_pack_progress(uint8_t *buf, uint64_t n)
{
    size_t i = 0;
    buf[i++] = 0x81;
    buf[i++] = 0xa8;
    memcpy(buf + i, "progress", 8);
    i += 8;
    if (n < 0x80) {
        buf[i++] = (uint8_t)n;
    } else if (n <= 0xff) {
        buf[i++] = 0xcc;
        buf[i++] = (uint8_t)n;
    } else if (n <= 0xffff) {
        buf[i++] = 0xcd;
        buf[i++] = (uint8_t)(n >> 8);
        buf[i++] = (uint8_t)n;
    } else if (n <= 0xffffffffu) {
        buf[i++] = 0xce;
        for (int s = 24; s >= 0; s -= 8)
            buf[i++] = (uint8_t)(n >> s);
    } else {
        buf[i++] = 0xcf;
        for (int s = 56; s >= 0; s -= 8)
            buf[i++] = (uint8_t)(n >> s);
    }
    return i;
}

int
am2z_ctx_progress(am2z_ctx_t *ctx, uint64_t n)
{
    if (!ctx)
        return AM2Z_EINVAL;
    uint8_t buf[32];
    size_t size = s_pack_progress(buf, n);
    return s_emit(ctx, "job:progress", buf, size);
}

/* ---------------------------------------------------------------------------
   Running one job
   ------------------------------------------------------------------------ */

/*  The error for a processor that returned `rc` (non-zero) without a typed
    error, or that failed without one. Caller owns it; may be NULL (OOM). */
static am2z_error_t *
s_untyped_failure(const am2zw_invoke_t *inv, bool failed, int rc)
{
    char cause[160];
    if (failed)
        snprintf(cause, sizeof cause,
                 "processor failed without an error value (out of memory)");
    else
        snprintf(cause, sizeof cause, "processor returned %d (%s)", rc,
                 am2z_strerror(rc));
    return am2z_error_execution(inv->processor, inv->job_id, cause);
}

void
am2zw_invoke(const am2zw_invoke_t *inv, am2zw_outcome_t *out)
{
    memset(out, 0, sizeof *out);
    out->started_ms = am2z_clock_wall_ms();
    out->exec_us = 1;
    am2z_ctx_t ctx = {
        .processor = inv->processor, .session = inv->session, .job_id = inv->job_id,
        .attempt = inv->attempt, .depth = inv->depth, .arg = inv->arg, .log = inv->log,
        .cancel = inv->cancel, .state = inv->input, .changes = am2z_changes_new(),
        .started_ms = out->started_ms, .host = inv->host,
    };
    if (!ctx.changes) {
        out->error = am2z_error_resource("memory", 0, 0);
        return;
    }
    uint64_t t0 = am2z_clock_mono_us();
    int rc = inv->fn(&ctx);
    uint64_t t1 = am2z_clock_mono_us();
    out->exec_us = t1 > t0 ? t1 - t0 : 1;
    if (ctx.has_selected)
        snprintf(out->selected, sizeof out->selected, "%s", ctx.selected);
    if (ctx.failed || rc != AM2Z_OK) {
        out->error = ctx.error ? ctx.error : s_untyped_failure(inv, ctx.failed, rc);
        ctx.error = NULL;
        am2z_changes_destroy(&ctx.changes);
        return;
    }
    size_t max = inv->max_state_size ? inv->max_state_size : AM2ZW_MAX_STATE_DEFAULT;
    /*  lastUpdated: the start plus the run, which saves reading the wall
        clock again (a clock step during the run is not worth tracking). */
    rc = am2z_state_apply(inv->input, ctx.changes, out->started_ms + (t1 - t0) / 1000, max,
                          &out->next);
    if (rc == AM2Z_OK) {
        out->changes = ctx.changes;
        return;
    }
    am2z_changes_destroy(&ctx.changes);
    char cause[192];
    snprintf(cause, sizeof cause, "applying the processor's changes failed: %s",
             am2z_strerror(rc));
    out->error = am2z_error_execution(inv->processor, inv->job_id, cause);
    /*  A type error or an oversize state is deterministic: a retry would
        fail the same way. */
    if (out->error && rc != AM2Z_ENOMEM)
        am2z_error_set_retryable(out->error, false);
}

void
am2zw_outcome_clear(am2zw_outcome_t *out)
{
    if (!out)
        return;
    am2z_state_destroy(&out->next);
    am2z_changes_destroy(&out->changes);
    am2z_error_destroy(&out->error);
}

void
am2zw_run_job(am2zw_thread_t *t, const char *processor, am2z_processor_fn *fn,
              void *arg, am2z_log_t *log, size_t max_state_size,
              const am2z_msg_t *job, atomic_bool *cancel,
              uint8_t **done_p, size_t *done_size)
{
    s_pipe_host_t h = { .t = t };
    uint8_t *changes = NULL;
    size_t changes_size = 0;
    am2zw_outcome_t oc = { .exec_us = 1 };
    *done_p = NULL;
    *done_size = 0;

    am2z_state_t *input = NULL;
    int rc = am2z_state_decode(job->state, job->state_size, &input);
    if (rc != AM2Z_OK) {
        oc.started_ms = am2z_clock_wall_ms();     /* am2zw_invoke sets it otherwise */
        oc.error = am2z_error_new(AM2Z_CAT_PROTOCOL, "INVALID_STATE",
                                  "job %s: input state does not decode: %s",
                                  job->job, am2z_strerror(rc));
    } else {
        const am2zw_host_t host = { .emit = s_pipe_emit, .call = s_pipe_call, .host = &h };
        const am2zw_invoke_t inv = {
            .processor = processor, .fn = fn, .arg = arg, .log = log,
            .max_state_size = max_state_size, .cancel = cancel,
            .session = job->session, .job_id = job->job, .attempt = job->attempt,
            .depth = job->call_depth, .input = input, .host = &host,
        };
        am2zw_invoke(&inv, &oc);
        /*  DONE.data = the changes (optional on the wire; the broker may use
            them to merge parallel branches). */
        if (oc.next && am2z_changes_encode(oc.changes, &changes, &changes_size) != AM2Z_OK)
            changes = NULL;
        am2z_state_destroy(&input);
    }

    /*  Borrowed pointers (job id, state bytes) are never freed through this
        message. */
    am2z_msg_t done;
    am2z_msg_init(&done, AM2Z_CMD_DONE);
    done.job = job->job;
    done.attempt = job->attempt;
    done.success = oc.next != NULL;
    done.state = oc.next ? (uint8_t *)am2z_state_data(oc.next) : NULL;
    done.state_size = oc.next ? am2z_state_size(oc.next) : 0;
    done.data = changes;
    done.data_size = changes ? changes_size : 0;
    done.error = oc.next ? NULL : oc.error;
    done.exec_us = oc.exec_us;
    done.started_at_ms = oc.started_ms;
    done.select = oc.next && oc.selected[0] ? oc.selected : NULL;   /* route selectors */
    if (!oc.next && !oc.error)
        done.error = oc.error = am2z_error_resource("memory", 0, 0);

    rc = am2z_msg_encode(&done, done_p, done_size);
    if (rc != AM2Z_OK) {
        /*  An empty DONE tells the main thread the slot is free; the broker's
            lease deadline takes care of the job. */
        AM2Z_LOG(log, AM2Z_LOG_ERROR, "worker", "DONE not encoded",
                 AM2Z_KS("job", job->job), AM2Z_KS("processor", processor),
                 AM2Z_KS("error", am2z_strerror(rc)));
        free(*done_p);
        *done_p = NULL;
        *done_size = 0;
    }
    free(changes);
    am2zw_outcome_clear(&oc);
}
