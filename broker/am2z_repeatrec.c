/*  am2z_repeatrec.c — see am2z_repeatrec.h. */
#include "am2z_repeatrec.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "am2z_error.h"
#include "am2z_jobrec.h"
#include "am2z_mpcheck.h"

#define S_MAX_DEPTH 64

static bool
s_key_is(const msgpack_object *key, const char *name)
{
    size_t len = strlen(name);
    return key->type == MSGPACK_OBJECT_STR && key->via.str.size == len
           && memcmp(key->via.str.ptr, name, len) == 0;
}

static char *
s_strdup_obj(const msgpack_object *val)
{
    char *s = malloc(val->via.str.size + 1);
    if (s) {
        memcpy(s, val->via.str.ptr, val->via.str.size);
        s[val->via.str.size] = '\0';
    }
    return s;
}

/*  Copies a string value that passes valid() into out[out_size]. */
static bool
s_copy_str(const msgpack_object *v, bool (*valid)(const char *, size_t), char *out,
           size_t out_size)
{
    if (v->type != MSGPACK_OBJECT_STR || v->via.str.size >= out_size
        || !valid(v->via.str.ptr, v->via.str.size))
        return false;
    memcpy(out, v->via.str.ptr, v->via.str.size);
    out[v->via.str.size] = '\0';
    return true;
}

/*  Unpacks one map after the structural check. The caller destroys *up on
    AM2Z_OK. */
static int
s_unpack_map(const uint8_t *data, size_t size, msgpack_unpacked *up)
{
    if (!data || am2z_msgpack_check(data, size, S_MAX_DEPTH) != AM2Z_OK)
        return AM2Z_EPROTO;
    msgpack_unpacked_init(up);
    if (msgpack_unpack_next(up, (const char *)data, size, NULL) != MSGPACK_UNPACK_SUCCESS
        || up->data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(up);
        return AM2Z_EPROTO;
    }
    return AM2Z_OK;
}

/* ---------------------------------------------------------------------------
   Repeat schedule
   ------------------------------------------------------------------------ */

int
am2z_repeatrec_encode(const am2z_repeatrec_t *rec, uint8_t **out, size_t *size)
{
    if (!rec || !rec->proc || !rec->session || !out || !size)
        return AM2Z_EINVAL;
    am2z_bw_t *w = am2z_bw_new();
    if (!w)
        return AM2Z_ENOMEM;
    am2z_bw_map(w, 9 + (rec->state ? 1u : 0u) + (rec->last[0] ? 1u : 0u));
    am2z_bw_str(w, "proc");    am2z_bw_str(w, rec->proc);
    am2z_bw_str(w, "session"); am2z_bw_str(w, rec->session);
    if (rec->state) {
        am2z_bw_str(w, "state"); am2z_bw_bin(w, rec->state, rec->state_size);
    }
    am2z_bw_str(w, "prio");    am2z_bw_int(w, rec->prio);
    am2z_bw_str(w, "timeout"); am2z_bw_uint(w, rec->timeout_ms);
    am2z_bw_str(w, "every");   am2z_bw_uint(w, rec->every_ms);
    am2z_bw_str(w, "limit");   am2z_bw_uint(w, rec->limit);
    am2z_bw_str(w, "runs");    am2z_bw_uint(w, rec->runs);
    am2z_bw_str(w, "next");    am2z_bw_uint(w, rec->next_ms);
    am2z_bw_str(w, "created"); am2z_bw_uint(w, rec->created_ms);
    if (rec->last[0]) {
        am2z_bw_str(w, "last"); am2z_bw_str(w, rec->last);
    }
    int rc = am2z_bw_take(w, out, size);
    am2z_bw_destroy(&w);
    return rc;
}

int
am2z_repeatrec_decode(const uint8_t *data, size_t size, am2z_repeatrec_t *rec)
{
    memset(rec, 0, sizeof *rec);
    msgpack_unpacked up;
    int rc = s_unpack_map(data, size, &up);
    if (rc != AM2Z_OK)
        return rc;
    rc = AM2Z_EPROTO;
    for (uint32_t i = 0; i < up.data.via.map.size; i++) {
        const msgpack_object *k = &up.data.via.map.ptr[i].key;
        const msgpack_object *v = &up.data.via.map.ptr[i].val;
        bool uint = v->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
        if (s_key_is(k, "proc")) {
            if (v->type != MSGPACK_OBJECT_STR || rec->proc
                || !am2z_name_valid(v->via.str.ptr, v->via.str.size))
                goto fail;
            if (!(rec->proc = s_strdup_obj(v)))
                goto nomem;
        } else if (s_key_is(k, "session")) {
            if (v->type != MSGPACK_OBJECT_STR || rec->session
                || !am2z_session_id_valid(v->via.str.ptr, v->via.str.size))
                goto fail;
            if (!(rec->session = s_strdup_obj(v)))
                goto nomem;
        } else if (s_key_is(k, "state")) {
            if (v->type != MSGPACK_OBJECT_BIN || rec->state || !v->via.bin.size)
                goto fail;
            if (!(rec->state = malloc(v->via.bin.size)))
                goto nomem;
            memcpy(rec->state, v->via.bin.ptr, v->via.bin.size);
            rec->state_size = v->via.bin.size;
        } else if (s_key_is(k, "prio")) {
            if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                rec->prio = v->via.i64;
            else if (uint && v->via.u64 <= INT64_MAX)
                rec->prio = (int64_t)v->via.u64;
            else
                goto fail;
        } else if (s_key_is(k, "timeout") && uint) {
            rec->timeout_ms = v->via.u64;
        } else if (s_key_is(k, "every") && uint) {
            rec->every_ms = v->via.u64;
        } else if (s_key_is(k, "limit") && uint) {
            rec->limit = v->via.u64;
        } else if (s_key_is(k, "runs") && uint) {
            rec->runs = v->via.u64;
        } else if (s_key_is(k, "next") && uint) {
            rec->next_ms = v->via.u64;
        } else if (s_key_is(k, "created") && uint) {
            rec->created_ms = v->via.u64;
        } else if (s_key_is(k, "last")) {
            if (!s_copy_str(v, am2z_job_id_valid, rec->last, sizeof rec->last))
                goto fail;
        } else if (s_key_is(k, "timeout") || s_key_is(k, "every") || s_key_is(k, "limit")
                   || s_key_is(k, "runs") || s_key_is(k, "next") || s_key_is(k, "created")) {
            goto fail;               /* a known counter of the wrong type */
        }
    }
    if (!rec->proc || !rec->session || !rec->every_ms)
        goto fail;
    msgpack_unpacked_destroy(&up);
    return AM2Z_OK;
nomem:
    rc = AM2Z_ENOMEM;
fail:
    msgpack_unpacked_destroy(&up);
    am2z_repeatrec_clear(rec);
    return rc;
}

void
am2z_repeatrec_clear(am2z_repeatrec_t *rec)
{
    if (!rec)
        return;
    free(rec->proc);
    free(rec->session);
    free(rec->state);
    memset(rec, 0, sizeof *rec);
}

/* ---------------------------------------------------------------------------
   Idempotency entry
   ------------------------------------------------------------------------ */

int
am2z_idemrec_encode(const am2z_idemrec_t *rec, uint8_t **out, size_t *size)
{
    if (!rec || !rec->id[0] || !out || !size)
        return AM2Z_EINVAL;
    am2z_bw_t *w = am2z_bw_new();
    if (!w)
        return AM2Z_ENOMEM;
    am2z_bw_map(w, 4 + (rec->repeat ? 1u : 0u));
    am2z_bw_str(w, "job");     am2z_bw_str(w, rec->id);
    am2z_bw_str(w, "proc");    am2z_bw_str(w, rec->proc);
    am2z_bw_str(w, "session"); am2z_bw_str(w, rec->session);
    am2z_bw_str(w, "at");      am2z_bw_uint(w, rec->at_ms);
    if (rec->repeat) {
        am2z_bw_str(w, "repeat"); am2z_bw_bool(w, true);
    }
    int rc = am2z_bw_take(w, out, size);
    am2z_bw_destroy(&w);
    return rc;
}

int
am2z_idemrec_decode(const uint8_t *data, size_t size, am2z_idemrec_t *rec)
{
    memset(rec, 0, sizeof *rec);
    msgpack_unpacked up;
    int rc = s_unpack_map(data, size, &up);
    if (rc != AM2Z_OK)
        return rc;
    bool ok = true;
    for (uint32_t i = 0; i < up.data.via.map.size && ok; i++) {
        const msgpack_object *k = &up.data.via.map.ptr[i].key;
        const msgpack_object *v = &up.data.via.map.ptr[i].val;
        if (s_key_is(k, "job"))
            ok = s_copy_str(v, am2z_job_id_valid, rec->id, sizeof rec->id);
        else if (s_key_is(k, "proc"))
            ok = s_copy_str(v, am2z_name_valid, rec->proc, sizeof rec->proc);
        else if (s_key_is(k, "session"))
            ok = s_copy_str(v, am2z_session_id_valid, rec->session, sizeof rec->session);
        else if (s_key_is(k, "at"))
            ok = v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && (rec->at_ms = v->via.u64, true);
        else if (s_key_is(k, "repeat"))
            ok = v->type == MSGPACK_OBJECT_BOOLEAN && (rec->repeat = v->via.boolean, true);
    }
    msgpack_unpacked_destroy(&up);
    if (!ok || !rec->id[0] || !rec->proc[0] || !rec->session[0]) {
        memset(rec, 0, sizeof *rec);
        return AM2Z_EPROTO;
    }
    return AM2Z_OK;
}

/* ---------------------------------------------------------------------------
   Progress
   ------------------------------------------------------------------------ */

bool
am2z_progress_peek(const uint8_t *data, size_t size, uint64_t *n)
{
    msgpack_unpacked up;
    if (s_unpack_map(data, size, &up) != AM2Z_OK)
        return false;
    bool found = false;
    for (uint32_t i = 0; i < up.data.via.map.size; i++) {
        const msgpack_object *k = &up.data.via.map.ptr[i].key;
        const msgpack_object *v = &up.data.via.map.ptr[i].val;
        if (s_key_is(k, "progress") && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            *n = v->via.u64;
            found = true;
        }
    }
    msgpack_unpacked_destroy(&up);
    return found;
}
