/*  am2z_repeat_reply.c — see am2z_repeat_reply.h. */
#include "am2z_repeat_reply.h"

#include "am2z_codec.h"
#include "am2z_mpcheck.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool
s_key_is(const msgpack_object *key, const char *name)
{
    size_t len = strlen(name);
    return key->type == MSGPACK_OBJECT_STR && key->via.str.size == len
           && memcmp(key->via.str.ptr, name, len) == 0;
}

static uint64_t
s_uint(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? o->via.u64 : 0;
}

/*  Copies a string value (truncated to out_size - 1 bytes). */
static void
s_copy_str(char *out, size_t out_size, const msgpack_object *o)
{
    size_t n = o->via.str.size < out_size - 1 ? o->via.str.size : out_size - 1;
    if (n)
        memcpy(out, o->via.str.ptr, n);
    out[n] = '\0';
}

int
am2z_repeat_reply_decode(const uint8_t *data, size_t size, am2z_repeat_list_t **out,
                         char *err, size_t err_size)
{
    if (!data || am2z_msgpack_check(data, size, AM2Z_CODEC_MAX_DEPTH) != AM2Z_OK) {
        if (err && err_size)
            snprintf(err, err_size, "REPLY repeats: data is not one well-formed msgpack object");
        return AM2Z_EPROTO;
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int rc = AM2Z_OK;
    am2z_repeat_list_t *list = NULL;
    if (msgpack_unpack_next(&up, (const char *)data, size, NULL) != MSGPACK_UNPACK_SUCCESS
        || up.data.type != MSGPACK_OBJECT_ARRAY) {
        rc = AM2Z_EPROTO;
        if (err && err_size)
            snprintf(err, err_size, "REPLY repeats: data must be an array");
        goto done;
    }
    const msgpack_object *a = &up.data;
    size_t n = a->via.array.size;
    list = calloc(1, sizeof *list);
    if (!list || (n && !(list->items = calloc(n, sizeof *list->items)))) {
        rc = AM2Z_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *e = &a->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_MAP) {
            rc = AM2Z_EPROTO;
            if (err && err_size)
                snprintf(err, err_size, "REPLY repeats: element %zu must be a map", i);
            goto done;
        }
        am2z_repeat_t *r = &list->items[list->count++];
        for (uint32_t k = 0; k < e->via.map.size; k++) {
            const msgpack_object *key = &e->via.map.ptr[k].key;
            const msgpack_object *val = &e->via.map.ptr[k].val;
            bool str = val->type == MSGPACK_OBJECT_STR;
            if (s_key_is(key, "id") && str)
                s_copy_str(r->id, sizeof r->id, val);
            else if (s_key_is(key, "proc") && str)
                s_copy_str(r->processor, sizeof r->processor, val);
            else if (s_key_is(key, "session") && str)
                s_copy_str(r->session_id, sizeof r->session_id, val);
            else if (s_key_is(key, "last") && str)
                s_copy_str(r->last_job_id, sizeof r->last_job_id, val);
            else if (s_key_is(key, "every"))
                r->every_ms = s_uint(val);
            else if (s_key_is(key, "limit"))
                r->limit = s_uint(val);
            else if (s_key_is(key, "runs"))
                r->runs = s_uint(val);
            else if (s_key_is(key, "next"))
                r->next_ms = s_uint(val);
            else if (s_key_is(key, "created"))
                r->created_ms = s_uint(val);
        }
        if (!r->id[0]) {
            rc = AM2Z_EPROTO;
            if (err && err_size)
                snprintf(err, err_size, "REPLY repeats: element %zu has no id", i);
            goto done;
        }
    }
done:
    msgpack_unpacked_destroy(&up);
    if (rc != AM2Z_OK) {
        am2z_repeat_list_destroy(&list);
        return rc;
    }
    *out = list;
    return AM2Z_OK;
}

void
am2z_repeat_list_destroy(am2z_repeat_list_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->items);
    free(*self_p);
    *self_p = NULL;
}
