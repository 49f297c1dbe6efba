/*  am2z_jobrec.c — see am2z_jobrec.h. The broker's only msgpack file. */
#include "am2z_jobrec.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "am2z_clock.h"
#include "am2z_error.h"
#include "am2z_mpcheck.h"

#define S_MAX_DEPTH 64

struct am2z_bw_t {
    msgpack_sbuffer sbuf;         /* owned bytes */
    msgpack_packer pk;            /* writes into sbuf */
    bool failed;                  /* sticky out-of-memory */
};

am2z_bw_t *
am2z_bw_new(void)
{
    am2z_bw_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    msgpack_sbuffer_init(&self->sbuf);
    msgpack_packer_init(&self->pk, &self->sbuf, msgpack_sbuffer_write);
    return self;
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
    am2z_bw_t *w = am2z_bw_new();
    if (!w)
        return AM2Z_ENOMEM;
    am2z_bw_map(w, 9 + (rec->state ? 1u : 0u) + (rec->error ? 1u : 0u)
                   + (rec->failed_ms ? 1u : 0u));
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
