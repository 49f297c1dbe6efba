/*  am2z_json.c — see am2z_json.h.

    Both directions recurse once per nesting level; depth is bounded before
    recursion starts (am2z_msgpack_check for msgpack, an explicit counter for
    JSON, whose own parser allows 2048 levels), so the stack is bounded.
    jansson's checked constructors return NULL both for bad input and for
    out-of-memory; this file validates UTF-8 itself so a NULL from jansson
    can only mean out of memory.
*/
#include "am2z_json.h"

#include "am2z_error.h"
#include "am2z_mpcheck.h"

#include <math.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------
   Base64
   ------------------------------------------------------------------------ */
static const char s_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int
am2z_base64_encode(const uint8_t *data, size_t size, char **out)
{
    if (!out || (!data && size))
        return AM2Z_EINVAL;
    size_t len = (size + 2) / 3 * 4;
    char *text = malloc(len + 1);
    if (!text)
        return AM2Z_ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < size; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < size)
            v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < size)
            v |= data[i + 2];
        text[o++] = s_b64[(v >> 18) & 63];
        text[o++] = s_b64[(v >> 12) & 63];
        text[o++] = i + 1 < size ? s_b64[(v >> 6) & 63] : '=';
        text[o++] = i + 2 < size ? s_b64[v & 63] : '=';
    }
    text[o] = '\0';
    *out = text;
    return AM2Z_OK;
}

static int
s_b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int
am2z_base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_size)
{
    if (!out || !out_size || (!text && len) || len % 4)
        return AM2Z_EINVAL;
    size_t pad = 0;
    if (len && text[len - 1] == '=')
        pad = len >= 2 && text[len - 2] == '=' ? 2 : 1;
    size_t size = len / 4 * 3 - pad;
    uint8_t *bytes = malloc(size ? size : 1);
    if (!bytes)
        return AM2Z_ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        bool last = i + 4 == len;
        int v[4];
        for (int k = 0; k < 4; k++) {
            bool is_pad = last && k >= 4 - (int)pad;
            v[k] = is_pad ? 0 : s_b64_value(text[i + (size_t)k]);
            if (v[k] < 0) {
                free(bytes);
                return AM2Z_EINVAL;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12
                     | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        /* canonical: the bits dropped by padding must be zero */
        if (last && ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff)))) {
            free(bytes);
            return AM2Z_EINVAL;
        }
        size_t nout = last ? 3 - pad : 3;
        bytes[o++] = (uint8_t)(w >> 16);
        if (nout > 1)
            bytes[o++] = (uint8_t)(w >> 8);
        if (nout > 2)
            bytes[o++] = (uint8_t)w;
    }
    *out = bytes;
    *out_size = size;
    return AM2Z_OK;
}

/* ---------------------------------------------------------------------------
   msgpack -> JSON
   ------------------------------------------------------------------------ */

/*  Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF); NUL allowed. */
static bool
s_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= len)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff
            || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

static json_t *
s_tagged_bytes(const char *tag, const void *bytes, size_t size)
{
    char *text = NULL;
    if (am2z_base64_encode(bytes, size, &text) != AM2Z_OK)
        return NULL;
    json_t *obj = json_object();
    json_t *str = json_string_nocheck(text);
    free(text);
    if (!obj || !str || json_object_set_new_nocheck(obj, tag, str) != 0) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

static json_t *s_from_object(const msgpack_object *o);

/*  Text of a non-string map key: decimal for integers, compact JSON for the
    rest. Caller owns the result. */
static char *
s_key_text(const msgpack_object *key, size_t *len)
{
    char *text = NULL;
    if (key->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (asprintf(&text, "%llu", (unsigned long long)key->via.u64) < 0)
            return NULL;
    } else if (key->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        if (asprintf(&text, "%lld", (long long)key->via.i64) < 0)
            return NULL;
    } else if (key->type == MSGPACK_OBJECT_STR) {
        /* not UTF-8: use its JSON form ({"$bin": ...}) as text */
        json_t *j = s_tagged_bytes("$bin", key->via.str.ptr, key->via.str.size);
        if (!j)
            return NULL;
        text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(j);
    } else {
        json_t *j = s_from_object(key);
        if (!j)
            return NULL;
        text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(j);
    }
    if (text)
        *len = strlen(text);
    return text;
}

/*  NULL only when out of memory (input was validated beforehand). */
static json_t *
s_from_object(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)INT64_MAX)
            return json_real((double)o->via.u64);
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(o->via.f64))
            return json_null();
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR:
        if (!s_utf8_valid(o->via.str.ptr, o->via.str.size))
            return s_tagged_bytes("$bin", o->via.str.ptr, o->via.str.size);
        /* msgpack-c leaves ptr NULL for an empty str */
        return json_stringn_nocheck(o->via.str.size ? o->via.str.ptr : "", o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return s_tagged_bytes("$bin", o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_EXT: {
        json_t *obj = json_object();
        char *text = NULL;
        if (!obj || json_object_set_new_nocheck(obj, "$ext", json_integer(o->via.ext.type)) != 0
            || am2z_base64_encode((const uint8_t *)o->via.ext.ptr, o->via.ext.size, &text)
                   != AM2Z_OK
            || json_object_set_new_nocheck(obj, "data", json_string_nocheck(text)) != 0) {
            free(text);
            json_decref(obj);
            return NULL;
        }
        free(text);
        return obj;
    }
    case MSGPACK_OBJECT_ARRAY: {
        json_t *arr = json_array();
        if (!arr)
            return NULL;
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            json_t *v = s_from_object(&o->via.array.ptr[i]);
            if (!v || json_array_append_new(arr, v) != 0) {
                json_decref(arr);
                return NULL;
            }
        }
        return arr;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *obj = json_object();
        if (!obj)
            return NULL;
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            json_t *v = s_from_object(&kv->val);
            if (!v) {
                json_decref(obj);
                return NULL;
            }
            int rc;
            if (kv->key.type == MSGPACK_OBJECT_STR
                && s_utf8_valid(kv->key.via.str.ptr, kv->key.via.str.size)) {
                rc = json_object_setn_new_nocheck(
                    obj, kv->key.via.str.size ? kv->key.via.str.ptr : "",
                    kv->key.via.str.size, v);
            } else {
                size_t len = 0;
                char *text = s_key_text(&kv->key, &len);
                if (!text) {
                    json_decref(v);
                    json_decref(obj);
                    return NULL;
                }
                rc = json_object_setn_new_nocheck(obj, text, len, v);
                free(text);
            }
            if (rc != 0) {
                json_decref(obj);
                return NULL;
            }
        }
        return obj;
    }
    }
    return json_null();
}

int
am2z_json_from_msgpack(const uint8_t *data, size_t size, json_t **out)
{
    if (!data || !out)
        return AM2Z_EINVAL;
    if (am2z_msgpack_check(data, size, AM2Z_JSON_MAX_DEPTH) != AM2Z_OK)
        return AM2Z_EPROTO;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int rc = AM2Z_OK;
    if (msgpack_unpack_next(&up, (const char *)data, size, &off)
            != MSGPACK_UNPACK_SUCCESS || off != size) {
        rc = AM2Z_EPROTO;
    } else {
        json_t *json = s_from_object(&up.data);
        if (!json)
            rc = AM2Z_ENOMEM;
        else
            *out = json;
    }
    msgpack_unpacked_destroy(&up);
    return rc;
}

/* ---------------------------------------------------------------------------
   JSON -> msgpack
   ------------------------------------------------------------------------ */

/*  For a tagged object: the base64 string under `key`, decoded. Returns
    AM2Z_OK, AM2Z_EINVAL or AM2Z_ENOMEM. */
static int
s_tag_bytes(const json_t *obj, const char *key, uint8_t **bytes, size_t *size)
{
    const json_t *s = json_object_get(obj, key);
    if (!json_is_string(s))
        return AM2Z_EINVAL;
    return am2z_base64_decode(json_string_value(s), json_string_length(s), bytes, size);
}

static int
s_pack(msgpack_packer *pk, const json_t *j, int depth)
{
    if (depth > AM2Z_JSON_MAX_DEPTH)
        return AM2Z_EINVAL;
    switch (json_typeof(j)) {
    case JSON_NULL:
        return msgpack_pack_nil(pk) == 0 ? AM2Z_OK : AM2Z_ENOMEM;
    case JSON_TRUE:
        return msgpack_pack_true(pk) == 0 ? AM2Z_OK : AM2Z_ENOMEM;
    case JSON_FALSE:
        return msgpack_pack_false(pk) == 0 ? AM2Z_OK : AM2Z_ENOMEM;
    case JSON_INTEGER:
        return msgpack_pack_int64(pk, (int64_t)json_integer_value(j)) == 0
                   ? AM2Z_OK : AM2Z_ENOMEM;
    case JSON_REAL:
        return msgpack_pack_double(pk, json_real_value(j)) == 0 ? AM2Z_OK : AM2Z_ENOMEM;
    case JSON_STRING: {
        size_t len = json_string_length(j);
        if (msgpack_pack_str(pk, len) != 0
            || msgpack_pack_str_body(pk, json_string_value(j), len) != 0)
            return AM2Z_ENOMEM;
        return AM2Z_OK;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        if (n > UINT32_MAX || msgpack_pack_array(pk, n) != 0)
            return AM2Z_ENOMEM;
        for (size_t i = 0; i < n; i++) {
            int rc = s_pack(pk, json_array_get(j, i), depth + 1);
            if (rc != AM2Z_OK)
                return rc;
        }
        return AM2Z_OK;
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(j);
        if (n == 1 && json_object_get(j, "$bin")) {
            uint8_t *bytes = NULL;
            size_t size = 0;
            int rc = s_tag_bytes(j, "$bin", &bytes, &size);
            if (rc != AM2Z_OK)
                return rc;
            if (msgpack_pack_bin(pk, size) != 0
                || msgpack_pack_bin_body(pk, bytes, size) != 0)
                rc = AM2Z_ENOMEM;
            free(bytes);
            return rc;
        }
        if (n == 2 && json_object_get(j, "$ext") && json_object_get(j, "data")) {
            const json_t *type = json_object_get(j, "$ext");
            if (!json_is_integer(type) || json_integer_value(type) < -128
                || json_integer_value(type) > 127)
                return AM2Z_EINVAL;
            uint8_t *bytes = NULL;
            size_t size = 0;
            int rc = s_tag_bytes(j, "data", &bytes, &size);
            if (rc != AM2Z_OK)
                return rc;
            if (msgpack_pack_ext(pk, size, (int8_t)json_integer_value(type)) != 0
                || msgpack_pack_ext_body(pk, bytes, size) != 0)
                rc = AM2Z_ENOMEM;
            free(bytes);
            return rc;
        }
        if (n > UINT32_MAX || msgpack_pack_map(pk, n) != 0)
            return AM2Z_ENOMEM;
        json_t *obj = (json_t *)j;   /* jansson's iterators take non-const */
        for (void *it = json_object_iter(obj); it; it = json_object_iter_next(obj, it)) {
            const char *key = json_object_iter_key(it);
            size_t len = json_object_iter_key_len(it);
            if (msgpack_pack_str(pk, len) != 0 || msgpack_pack_str_body(pk, key, len) != 0)
                return AM2Z_ENOMEM;
            int rc = s_pack(pk, json_object_iter_value(it), depth + 1);
            if (rc != AM2Z_OK)
                return rc;
        }
        return AM2Z_OK;
    }
    }
    return AM2Z_EINVAL;
}

int
am2z_json_to_msgpack(const json_t *json, uint8_t **data, size_t *size)
{
    if (!json || !data || !size)
        return AM2Z_EINVAL;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = s_pack(&pk, json, 0);
    if (rc == AM2Z_OK && !sb.data)
        rc = AM2Z_ENOMEM;
    if (rc != AM2Z_OK) {
        msgpack_sbuffer_destroy(&sb);
        return rc;
    }
    *size = sb.size;
    *data = (uint8_t *)msgpack_sbuffer_release(&sb);
    return AM2Z_OK;
}

int
am2z_json_dumps_msgpack(const uint8_t *data, size_t size, size_t flags, char **out)
{
    if (!out)
        return AM2Z_EINVAL;
    json_t *json = NULL;
    int rc = am2z_json_from_msgpack(data, size, &json);
    if (rc != AM2Z_OK)
        return rc;
    char *text = json_dumps(json, flags | JSON_ENCODE_ANY);
    json_decref(json);
    if (!text)
        return AM2Z_ENOMEM;
    *out = text;
    return AM2Z_OK;
}

int
am2z_json_parse_to_msgpack(const char *text, uint8_t **data, size_t *size,
                           char *err, size_t err_size)
{
    if (!text || !data || !size) {
        if (err && err_size)
            snprintf(err, err_size, "invalid JSON: no text");
        return AM2Z_EINVAL;
    }
    json_error_t jerr;
    json_t *json = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!json) {
        if (err && err_size) {
            if (json_error_code(&jerr) == json_error_out_of_memory)
                snprintf(err, err_size, "out of memory parsing JSON");
            else
                snprintf(err, err_size, "invalid JSON at line %d, column %d: %s",
                         jerr.line, jerr.column, jerr.text);
        }
        return json_error_code(&jerr) == json_error_out_of_memory ? AM2Z_ENOMEM
                                                                   : AM2Z_EINVAL;
    }
    int rc = am2z_json_to_msgpack(json, data, size);
    json_decref(json);
    if (rc == AM2Z_EINVAL && err && err_size)
        snprintf(err, err_size,
                 "invalid JSON value: nested deeper than %d or a malformed "
                 "\"$bin\"/\"$ext\" object", AM2Z_JSON_MAX_DEPTH);
    return rc;
}
