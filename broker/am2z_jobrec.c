/*  am2z_jobrec.c — see am2z_jobrec.h. The broker's only msgpack file. */
#include "am2z_jobrec.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "am2z_clock.h"
#include "am2z_error.h"
#include "am2z_mpcheck.h"
#include "am2z_sbuf.h"

#define S_MAX_DEPTH 64

struct am2z_bw_t {
    msgpack_sbuffer sbuf;         /* owned bytes */
    msgpack_packer pk;            /* writes into sbuf */
    bool failed;                  /* sticky out-of-memory */
};

am2z_bw_t *
am2z_bw_new_cap(size_t cap)
{
    am2z_bw_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    am2z_sbuf_init(&self->sbuf, cap);
    msgpack_packer_init(&self->pk, &self->sbuf, msgpack_sbuffer_write);
    return self;
}

am2z_bw_t *
am2z_bw_new(void)
{
    return am2z_bw_new_cap(256);
}

void
am2z_bw_destroy(am2z_bw_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    msgpack_sbuffer_destroy(&(*self_p)->sbuf);
    free(*self_p);
    *self_p = NULL;
}

#define S_CHECK(self, expr) do { if ((expr) != 0) (self)->failed = true; } while (0)

void am2z_bw_map(am2z_bw_t *self, uint32_t n) { S_CHECK(self, msgpack_pack_map(&self->pk, n)); }
void am2z_bw_array(am2z_bw_t *self, uint32_t n) { S_CHECK(self, msgpack_pack_array(&self->pk, n)); }
void am2z_bw_uint(am2z_bw_t *self, uint64_t v) { S_CHECK(self, msgpack_pack_uint64(&self->pk, v)); }
void am2z_bw_int(am2z_bw_t *self, int64_t v) { S_CHECK(self, msgpack_pack_int64(&self->pk, v)); }
void am2z_bw_nil(am2z_bw_t *self) { S_CHECK(self, msgpack_pack_nil(&self->pk)); }

void
am2z_bw_bool(am2z_bw_t *self, bool v)
{
    S_CHECK(self, v ? msgpack_pack_true(&self->pk) : msgpack_pack_false(&self->pk));
}

void
am2z_bw_strn(am2z_bw_t *self, const char *s, size_t len)
{
    S_CHECK(self, msgpack_pack_str(&self->pk, len));
    if (len)
        S_CHECK(self, msgpack_pack_str_body(&self->pk, s, len));
}

void
am2z_bw_str(am2z_bw_t *self, const char *s)
{
    if (!s)
        am2z_bw_nil(self);
    else
        am2z_bw_strn(self, s, strlen(s));
}

void
am2z_bw_bin(am2z_bw_t *self, const uint8_t *data, size_t size)
{
    S_CHECK(self, msgpack_pack_bin(&self->pk, size));
    if (size)
        S_CHECK(self, msgpack_pack_bin_body(&self->pk, data, size));
}

void
am2z_bw_raw(am2z_bw_t *self, const uint8_t *data, size_t size)
{
    if (!data || !size)
        am2z_bw_nil(self);
    else
        S_CHECK(self, msgpack_sbuffer_write(&self->sbuf, (const char *)data, size));
}

int
am2z_bw_take(am2z_bw_t *self, uint8_t **out, size_t *size)
{
    if (self->failed) {
        msgpack_sbuffer_clear(&self->sbuf);
        self->failed = false;
        return AM2Z_ENOMEM;
    }
    *size = self->sbuf.size;
    if (self->sbuf.size == 0) {
        *out = malloc(1);
        return *out ? AM2Z_OK : AM2Z_ENOMEM;
    }
    *out = (uint8_t *)msgpack_sbuffer_release(&self->sbuf);
    return *out ? AM2Z_OK : AM2Z_ENOMEM;
}

/* ---------------------------------------------------------------------------
   Job record
   ------------------------------------------------------------------------ */

int
am2z_jobrec_encode(const am2z_jobrec_t *rec, uint8_t **out, size_t *size)
{
    if (!rec || !rec->proc || !rec->session)
        return AM2Z_EINVAL;
    /* the fields' keys and values besides the state: about 200 bytes */
    am2z_bw_t *w = am2z_bw_new_cap(256 + rec->state_size);
    if (!w)
        return AM2Z_ENOMEM;
    am2z_bw_map(w, 9 + (rec->state ? 1u : 0u) + (rec->error ? 1u : 0u)
                   + (rec->failed_ms ? 1u : 0u) + (rec->overlay ? 1u : 0u));
    am2z_bw_str(w, "proc");    am2z_bw_str(w, rec->proc);
    am2z_bw_str(w, "session"); am2z_bw_str(w, rec->session);
    if (rec->state) {
        am2z_bw_str(w, "state"); am2z_bw_bin(w, rec->state, rec->state_size);
    }
    am2z_bw_str(w, "prio");    am2z_bw_int(w, rec->prio);
    am2z_bw_str(w, "timeout"); am2z_bw_uint(w, rec->timeout_ms);
    am2z_bw_str(w, "delay");   am2z_bw_uint(w, rec->delay_ms);
    am2z_bw_str(w, "depth");   am2z_bw_uint(w, rec->depth);
    am2z_bw_str(w, "created"); am2z_bw_uint(w, rec->created_ms);
    am2z_bw_str(w, "seq");     am2z_bw_uint(w, rec->seq);
    am2z_bw_str(w, "attempt"); am2z_bw_uint(w, rec->attempt);
    if (rec->error) {
        am2z_bw_str(w, "error");  am2z_bw_bin(w, rec->error, rec->error_size);
    }
    if (rec->failed_ms) {
        am2z_bw_str(w, "failed"); am2z_bw_uint(w, rec->failed_ms);
    }
    if (rec->overlay) {
        am2z_bw_str(w, "overlay"); am2z_bw_bool(w, true);
    }
    int rc = am2z_bw_take(w, out, size);
    am2z_bw_destroy(&w);
    return rc;
}

static bool
s_key_is(const msgpack_object *key, const char *name)
{
    size_t len = strlen(name);
    return key->type == MSGPACK_OBJECT_STR && key->via.str.size == len
           && memcmp(key->via.str.ptr, name, len) == 0;
}

static bool
s_get_uint(const msgpack_object *val, uint64_t *out)
{
    if (val->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = val->via.u64;
    return true;
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

int
am2z_jobrec_decode(const uint8_t *data, size_t size, am2z_jobrec_t *rec)
{
    memset(rec, 0, sizeof *rec);
    if (!data || am2z_msgpack_check(data, size, S_MAX_DEPTH) != AM2Z_OK)
        return AM2Z_EPROTO;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int rc = AM2Z_EPROTO;
    if (msgpack_unpack_next(&up, (const char *)data, size, NULL) != MSGPACK_UNPACK_SUCCESS
        || up.data.type != MSGPACK_OBJECT_MAP)
        goto done;
    bool have_created = false;
    for (uint32_t i = 0; i < up.data.via.map.size; i++) {
        const msgpack_object *k = &up.data.via.map.ptr[i].key;
        const msgpack_object *v = &up.data.via.map.ptr[i].val;
        uint64_t u = 0;
        if (s_key_is(k, "proc")) {
            if (v->type != MSGPACK_OBJECT_STR
                || !am2z_name_valid(v->via.str.ptr, v->via.str.size) || rec->proc)
                goto fail;
            if (!(rec->proc = s_strdup_obj(v)))
                goto nomem;
        } else if (s_key_is(k, "session")) {
            if (v->type != MSGPACK_OBJECT_STR
                || !am2z_session_id_valid(v->via.str.ptr, v->via.str.size) || rec->session)
                goto fail;
            if (!(rec->session = s_strdup_obj(v)))
                goto nomem;
        } else if (s_key_is(k, "state")) {
            if (v->type == MSGPACK_OBJECT_NIL)
                continue;
            if (v->type != MSGPACK_OBJECT_BIN || rec->state || v->via.bin.size == 0
                || !am2z_bmsg_is_map((const uint8_t *)v->via.bin.ptr, v->via.bin.size))
                goto fail;
            if (!(rec->state = malloc(v->via.bin.size)))
                goto nomem;
            memcpy(rec->state, v->via.bin.ptr, v->via.bin.size);
            rec->state_size = v->via.bin.size;
        } else if (s_key_is(k, "prio")) {
            if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                if (v->via.u64 > (uint64_t)INT64_MAX)
                    goto fail;
                rec->prio = (int64_t)v->via.u64;
            } else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
                rec->prio = v->via.i64;
            } else {
                goto fail;
            }
        } else if (s_key_is(k, "timeout")) {
            if (!s_get_uint(v, &rec->timeout_ms)) goto fail;
        } else if (s_key_is(k, "delay")) {
            if (!s_get_uint(v, &rec->delay_ms)) goto fail;
        } else if (s_key_is(k, "depth")) {
            if (!s_get_uint(v, &u) || u > UINT32_MAX) goto fail;
            rec->depth = (uint32_t)u;
        } else if (s_key_is(k, "created")) {
            if (!s_get_uint(v, &rec->created_ms)) goto fail;
            have_created = true;
        } else if (s_key_is(k, "seq")) {
            if (!s_get_uint(v, &rec->seq)) goto fail;
        } else if (s_key_is(k, "attempt")) {
            if (!s_get_uint(v, &u) || u > UINT32_MAX) goto fail;
            rec->attempt = (uint32_t)u;
        } else if (s_key_is(k, "error")) {
            if (v->type != MSGPACK_OBJECT_BIN || rec->error || v->via.bin.size == 0
                || !am2z_bmsg_is_map((const uint8_t *)v->via.bin.ptr, v->via.bin.size))
                goto fail;
            if (!(rec->error = malloc(v->via.bin.size)))
                goto nomem;
            memcpy(rec->error, v->via.bin.ptr, v->via.bin.size);
            rec->error_size = v->via.bin.size;
        } else if (s_key_is(k, "failed")) {
            if (!s_get_uint(v, &rec->failed_ms)) goto fail;
        } else if (s_key_is(k, "overlay")) {
            if (v->type != MSGPACK_OBJECT_BOOLEAN) goto fail;
            rec->overlay = v->via.boolean;
        }
        /* unknown keys: ignored (forward compatible) */
    }
    if (!rec->proc || !rec->session || !have_created)
        goto fail;
    rc = AM2Z_OK;
    goto done;
nomem:
    rc = AM2Z_ENOMEM;
fail:
    am2z_jobrec_clear(rec);
    if (rc == AM2Z_OK)
        rc = AM2Z_EPROTO;
done:
    msgpack_unpacked_destroy(&up);
    return rc;
}

void
am2z_jobrec_clear(am2z_jobrec_t *rec)
{
    if (!rec)
        return;
    free(rec->proc);
    free(rec->session);
    free(rec->state);
    free(rec->error);
    memset(rec, 0, sizeof *rec);
}

/* ---------------------------------------------------------------------------
   Run records
   ------------------------------------------------------------------------ */

static int s_run_from(const msgpack_object *o, int depth, am2z_runrec_t **out);

/*  A bin holding one msgpack map, copied. */
static int
s_bin_map(const msgpack_object *v, uint8_t **out, size_t *size)
{
    if (v->type == MSGPACK_OBJECT_NIL)
        return AM2Z_OK;
    if (v->type != MSGPACK_OBJECT_BIN || *out
        || !am2z_bmsg_is_map((const uint8_t *)v->via.bin.ptr, v->via.bin.size))
        return AM2Z_EPROTO;
    if (!(*out = malloc(v->via.bin.size)))
        return AM2Z_ENOMEM;
    memcpy(*out, v->via.bin.ptr, v->via.bin.size);
    *size = v->via.bin.size;
    return AM2Z_OK;
}

static int
s_str_field(const msgpack_object *v, char **out)
{
    if (v->type == MSGPACK_OBJECT_NIL)
        return AM2Z_OK;
    if (v->type != MSGPACK_OBJECT_STR || *out || v->via.str.size > 4096
        || memchr(v->via.str.ptr, 0, v->via.str.size))
        return AM2Z_EPROTO;
    return (*out = s_strdup_obj(v)) ? AM2Z_OK : AM2Z_ENOMEM;
}

static void
s_unit_clear(am2z_rununit_t *u)
{
    free(u->state);
    free(u->job);
    free(u->session);
    am2z_runrec_destroy(&u->child);
    memset(u, 0, sizeof *u);
}

static int
s_unit_from(const msgpack_object *o, int depth, am2z_rununit_t *u)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return AM2Z_EPROTO;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        uint64_t x = 0;
        int rc = AM2Z_OK;
        if (s_key_is(k, "st")) {
            if (!s_get_uint(v, &x) || x > 2)
                return AM2Z_EPROTO;
            u->status = (uint32_t)x;
        } else if (s_key_is(k, "state")) {
            rc = s_bin_map(v, &u->state, &u->state_size);
        } else if (s_key_is(k, "job")) {
            rc = s_str_field(v, &u->job);
        } else if (s_key_is(k, "session")) {
            rc = s_str_field(v, &u->session);
        } else if (s_key_is(k, "child")) {
            if (v->type != MSGPACK_OBJECT_NIL)
                rc = u->child ? AM2Z_EPROTO : s_run_from(v, depth + 1, &u->child);
        }
        if (rc != AM2Z_OK)
            return rc;
    }
    return AM2Z_OK;
}

static int
s_run_from(const msgpack_object *o, int depth, am2z_runrec_t **out)
{
    *out = NULL;
    if (o->type != MSGPACK_OBJECT_MAP || depth > 16)
        return AM2Z_EPROTO;
    am2z_runrec_t *r = calloc(1, sizeof *r);
    if (!r)
        return AM2Z_ENOMEM;
    int rc = AM2Z_OK;
    for (uint32_t i = 0; rc == AM2Z_OK && i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        uint64_t x = 0;
        if (s_key_is(k, "job"))
            rc = s_str_field(v, &r->job);
        else if (s_key_is(k, "comp"))
            rc = s_str_field(v, &r->comp);
        else if (s_key_is(k, "session"))
            rc = s_str_field(v, &r->session);
        else if (s_key_is(k, "key"))
            rc = s_str_field(v, &r->key);
        else if (s_key_is(k, "target"))
            rc = s_str_field(v, &r->target);
        else if (s_key_is(k, "started"))
            rc = s_get_uint(v, &r->started_ms) ? AM2Z_OK : AM2Z_EPROTO;
        else if (s_key_is(k, "expver"))
            rc = s_get_uint(v, &r->expected_version) ? AM2Z_OK : AM2Z_EPROTO;
        else if (s_key_is(k, "phase")) {
            rc = s_get_uint(v, &x) && x < 16 ? AM2Z_OK : AM2Z_EPROTO;
            r->phase = (uint32_t)x;
        } else if (s_key_is(k, "cursor")) {
            rc = s_get_uint(v, &x) && x <= UINT32_MAX ? AM2Z_OK : AM2Z_EPROTO;
            r->cursor = (uint32_t)x;
        } else if (s_key_is(k, "input"))
            rc = s_bin_map(v, &r->input, &r->input_size);
        else if (s_key_is(k, "cur"))
            rc = s_bin_map(v, &r->cur, &r->cur_size);
        else if (s_key_is(k, "aux"))
            rc = s_unit_from(v, depth, &r->aux);
        else if (s_key_is(k, "units")) {
            if (v->type != MSGPACK_OBJECT_ARRAY || r->units) {
                rc = AM2Z_EPROTO;
                break;
            }
            r->units = calloc(v->via.array.size ? v->via.array.size : 1, sizeof *r->units);
            if (!r->units) {
                rc = AM2Z_ENOMEM;
                break;
            }
            r->nunits = v->via.array.size;
            for (uint32_t j = 0; rc == AM2Z_OK && j < v->via.array.size; j++)
                rc = s_unit_from(&v->via.array.ptr[j], depth, &r->units[j]);
        }
    }
    if (rc == AM2Z_OK && (!r->comp || !r->session || !r->input))
        rc = AM2Z_EPROTO;
    if (rc != AM2Z_OK) {
        am2z_runrec_destroy(&r);
        return rc;
    }
    *out = r;
    return AM2Z_OK;
}

int
am2z_runrec_decode(const uint8_t *data, size_t size, am2z_runrec_t **out)
{
    *out = NULL;
    if (!data || am2z_msgpack_check(data, size, S_MAX_DEPTH) != AM2Z_OK)
        return AM2Z_EPROTO;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int rc = AM2Z_EPROTO;
    if (msgpack_unpack_next(&up, (const char *)data, size, NULL) == MSGPACK_UNPACK_SUCCESS)
        rc = s_run_from(&up.data, 0, out);
    msgpack_unpacked_destroy(&up);
    return rc;
}

void
am2z_runrec_destroy(am2z_runrec_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_runrec_t *r = *self_p;
    free(r->job);
    free(r->comp);
    free(r->session);
    free(r->input);
    free(r->cur);
    free(r->key);
    free(r->target);
    for (size_t i = 0; r->units && i < r->nunits; i++)
        s_unit_clear(&r->units[i]);
    free(r->units);
    s_unit_clear(&r->aux);
    free(r);
    *self_p = NULL;
}

/* ---------------------------------------------------------------------------
   Peeks
   ------------------------------------------------------------------------ */

bool
am2z_bmsg_is_map(const uint8_t *data, size_t size)
{
    if (!data || size == 0 || am2z_msgpack_check(data, size, S_MAX_DEPTH) != AM2Z_OK)
        return false;
    uint8_t b = data[0];
    return (b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf;
}
