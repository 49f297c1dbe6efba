/*  am2z_state.c — see am2z_state.h.

    Representation. A state is one malloc'd block: the struct, then its
    encoded bytes. Reads walk those bytes in place (s_lookup, with the
    s_head / s_skip readers below), so a state needs no decoded view: a
    decode is a structural check, one copy and a walk of the metadata map,
    and a read allocates nothing. The metadata fields are cached in the
    struct when the state is built.

    Building. Every constructor goes through s_build(): the user part of a
    source map becomes a small tree in one arena (s_arena_t, freed at
    once), the changes are applied to that tree, and the tree is encoded
    with "metadata" first. A tree node is either a slice of encoded bytes (from the source
    state or from a change) or a map / array the changes had to open. Only
    maps on a changed path are opened; everything else is copied verbatim,
    so raw values (bin, ext, float32, any int width) round-trip exactly and
    an untouched subtree costs one memcpy. The encoding is written straight
    into the new state's block; its metadata is the one just written, so
    only the structure (depth) is checked again.

    Byte walking. Reading, opening a map or recording a change reads msgpack
    bytes directly (s_head / s_skip) instead of through msgpack-c, because
    msgpack-c would re-encode values rather than keep their bytes, and
    unpacking a whole state (a zone, an object tree) to read one key costs
    more than the processor that reads it. Those readers only ever see bytes
    that am2z_msgpack_check() accepted, and they still bounds-check every
    header.
*/
#include "am2z_state.h"

#include "am2z_clock.h"
#include "am2z_error.h"
#include "am2z_mpcheck.h"

#include <msgpack.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define S_METADATA     "metadata"
#define S_METADATA_LEN 8

/* ---------------------------------------------------------------------------
   Reading encoded msgpack bytes
   ------------------------------------------------------------------------ */

/*  One msgpack header. For str/bin/ext, `len` counts the bytes after the
    header (ext: including its type byte); for scalars the fixed payload. */
typedef struct {
    am2z_vtype_t type;
    size_t hdr;         /* header bytes, type byte included */
    uint64_t len;       /* payload bytes that follow the header */
    uint64_t count;     /* array elements or map pairs */
} s_head_t;


/*  Reads the header at p[0..n). Returns 0, or -1 when the header or its
    payload does not fit in n bytes or the type byte is 0xc1. */
static int
s_head(const uint8_t *p, size_t n, s_head_t *h)
{
    if (n == 0)
        return -1;
    uint8_t b = p[0];
    size_t lenb = 0;        /* big-endian length bytes after the type byte */
    h->hdr = 1;
    h->len = 0;
    h->count = 0;
    if (b <= 0x7f || b >= 0xe0) {
        h->type = AM2Z_VT_INT;
    } else if ((b & 0xe0) == 0xa0) {
        h->type = AM2Z_VT_STR;
        h->len = b & 0x1f;
    } else if ((b & 0xf0) == 0x90) {
        h->type = AM2Z_VT_ARRAY;
        h->count = b & 0x0f;
    } else if ((b & 0xf0) == 0x80) {
        h->type = AM2Z_VT_MAP;
        h->count = b & 0x0f;
    } else {
        switch (b) {
        case 0xc0: h->type = AM2Z_VT_NIL; break;
        case 0xc2: case 0xc3: h->type = AM2Z_VT_BOOL; break;
        case 0xc4: h->type = AM2Z_VT_BIN; lenb = 1; break;
        case 0xc5: h->type = AM2Z_VT_BIN; lenb = 2; break;
        case 0xc6: h->type = AM2Z_VT_BIN; lenb = 4; break;
        case 0xc7: h->type = AM2Z_VT_EXT; lenb = 1; h->len = 1; break;
        case 0xc8: h->type = AM2Z_VT_EXT; lenb = 2; h->len = 1; break;
        case 0xc9: h->type = AM2Z_VT_EXT; lenb = 4; h->len = 1; break;
        case 0xca: h->type = AM2Z_VT_FLOAT; h->len = 4; break;
        case 0xcb: h->type = AM2Z_VT_FLOAT; h->len = 8; break;
        case 0xcc: case 0xd0: h->type = AM2Z_VT_INT; h->len = 1; break;
        case 0xcd: case 0xd1: h->type = AM2Z_VT_INT; h->len = 2; break;
        case 0xce: case 0xd2: h->type = AM2Z_VT_INT; h->len = 4; break;
        case 0xcf: case 0xd3: h->type = AM2Z_VT_INT; h->len = 8; break;
        case 0xd4: h->type = AM2Z_VT_EXT; h->len = 2; break;
        case 0xd5: h->type = AM2Z_VT_EXT; h->len = 3; break;
        case 0xd6: h->type = AM2Z_VT_EXT; h->len = 5; break;
        case 0xd7: h->type = AM2Z_VT_EXT; h->len = 9; break;
        case 0xd8: h->type = AM2Z_VT_EXT; h->len = 17; break;
        case 0xd9: h->type = AM2Z_VT_STR; lenb = 1; break;
        case 0xda: h->type = AM2Z_VT_STR; lenb = 2; break;
        case 0xdb: h->type = AM2Z_VT_STR; lenb = 4; break;
        case 0xdc: h->type = AM2Z_VT_ARRAY; lenb = 2; break;
        case 0xdd: h->type = AM2Z_VT_ARRAY; lenb = 4; break;
        case 0xde: h->type = AM2Z_VT_MAP; lenb = 2; break;
        case 0xdf: h->type = AM2Z_VT_MAP; lenb = 4; break;
        default:   return -1;                          /* 0xc1 */
        }
        if (lenb) {
            if (n - 1 < lenb)
                return -1;
            uint64_t v = am2z_be_read(p + 1, lenb);
            h->hdr += lenb;
            if (h->type == AM2Z_VT_ARRAY || h->type == AM2Z_VT_MAP)
                h->count = v;
            else
                h->len += v;
        }
    }
    if (h->len > n - h->hdr)
        return -1;
    return 0;
}

/*  Size of the one object that starts at p[0..n), or 0 if it is malformed.
    Iterative: `pending` counts the objects still to pass, so nesting costs
    no stack. */
static size_t
s_skip(const uint8_t *p, size_t n)
{
    uint64_t pending = 1;
    size_t pos = 0;
    while (pending > 0) {
        s_head_t h;
        if (s_head(p + pos, n - pos, &h) != 0)
            return 0;
        pos += h.hdr + (size_t)h.len;
        pending += (h.type == AM2Z_VT_MAP ? 2 * h.count : h.count) - 1;
        if (pending > n - pos)              /* each object needs one byte */
            return 0;
    }
    return pos;
}

/* ---------------------------------------------------------------------------
   Paths
   ------------------------------------------------------------------------ */

/*  1..AM2Z_PATH_LEN_MAX bytes, no NUL, no empty segment. */
static bool
s_path_ok(const char *path, size_t len)
{
    if (len == 0 || len > AM2Z_PATH_LEN_MAX)
        return false;
    if (path[0] == '.' || path[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (path[i] == '\0')
            return false;
        if (path[i] == '.' && i + 1 < len && path[i + 1] == '.')
            return false;
    }
    return true;
}

/*  True when the first segment is the reserved "metadata". */
static bool
s_path_reserved(const char *path, size_t len)
{
    return len >= S_METADATA_LEN && memcmp(path, S_METADATA, S_METADATA_LEN) == 0
           && (len == S_METADATA_LEN || path[S_METADATA_LEN] == '.');
}

/*  Length of a NUL-terminated path, or AM2Z_PATH_LEN_MAX + 1 if longer;
    never reads past that. */
static size_t
s_path_len(const char *path)
{
    return strnlen(path, AM2Z_PATH_LEN_MAX + 1);
}

/*  A canonical decimal index ("0", "17"; not "07", "+1", "") into *index. */
static bool
s_path_index(const char *seg, size_t len, uint32_t *index)
{
    if (len == 0 || len > 10 || (len > 1 && seg[0] == '0'))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (seg[i] < '0' || seg[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(seg[i] - '0');
    }
    if (v > UINT32_MAX)
        return false;
    *index = (uint32_t)v;
    return true;
}

/* ---------------------------------------------------------------------------
   Changes
   ------------------------------------------------------------------------ */

typedef enum { S_OP_SET = 0, S_OP_DEL, S_OP_APPEND, S_OP_COUNT } s_op_t;

static const char *const s_op_names[S_OP_COUNT] = { "set", "del", "append" };

/*  One recorded change. `path` and `value` both point into one buffer:
    `buf` when the change owns it, else the changes' inline bytes. */
typedef struct {
    s_op_t op;
    const char *path;       /* NUL-terminated, valid, not under metadata */
    size_t path_len;
    const uint8_t *value;   /* exactly one msgpack object; NULL for del */
    size_t value_size;
    char *buf;              /* owned (path, NUL, value bytes), or NULL */
} s_change_t;

/*  Room kept inside the object, so the usual processor (a few small
    changes) records them without allocating. */
#define S_INLINE_ITEMS 4
#define S_INLINE_BYTES 256

/*  The object never moves once allocated, so pointers into `inline_bytes`
    stay valid for its life. */
struct am2z_changes_t {
    s_change_t *items;      /* in recording order: inline_items, or owned */
    size_t count;
    size_t cap;
    size_t inline_used;     /* bytes of inline_bytes handed out */
    s_change_t inline_items[S_INLINE_ITEMS];
    _Alignas(8) char inline_bytes[S_INLINE_BYTES];
};

am2z_changes_t *
am2z_changes_new(void)
{
    am2z_changes_t *self = malloc(sizeof *self);
    if (!self)
        return NULL;
    self->items = self->inline_items;
    self->count = 0;
    self->cap = S_INLINE_ITEMS;
    self->inline_used = 0;
    return self;
}

void
am2z_changes_destroy(am2z_changes_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_changes_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++)
        free(self->items[i].buf);
    if (self->items != self->inline_items)
        free(self->items);
    free(self);
    *self_p = NULL;
}

size_t
am2z_changes_count(const am2z_changes_t *self)
{
    return self ? self->count : 0;
}

/*  The rules every recorded path follows (AM2Z_EINVAL otherwise). */
static int
s_path_check(const am2z_changes_t *self, const char *path, size_t path_len)
{
    if (!self || !path || !s_path_ok(path, path_len)
        || s_path_reserved(path, path_len))
        return AM2Z_EINVAL;
    return AM2Z_OK;
}

/*  Appends a change whose value is hdr[0..hdr_size) followed by
    body[0..body_size) (both empty for del). The caller has checked that the
    value is one msgpack object; the path is checked here. */
static int
s_record(am2z_changes_t *self, s_op_t op, const char *path, size_t path_len,
         const void *hdr, size_t hdr_size, const void *body, size_t body_size)
{
    int rc = s_path_check(self, path, path_len);
    if (rc != AM2Z_OK)
        return rc;
    if (self->count == self->cap) {
        size_t cap = 2 * self->cap;
        bool was_inline = self->items == self->inline_items;
        s_change_t *items = realloc(was_inline ? NULL : self->items, cap * sizeof *items);
        if (!items)
            return AM2Z_ENOMEM;
        if (was_inline)
            memcpy(items, self->inline_items, sizeof self->inline_items);
        self->items = items;
        self->cap = cap;
    }
    size_t need = path_len + 1 + hdr_size + body_size;
    char *buf, *owned = NULL;
    if (need <= S_INLINE_BYTES - self->inline_used) {
        buf = self->inline_bytes + self->inline_used;
        self->inline_used += need;
    } else if (!(buf = owned = malloc(need))) {
        return AM2Z_ENOMEM;
    }
    memcpy(buf, path, path_len);
    buf[path_len] = '\0';
    uint8_t *value = (uint8_t *)buf + path_len + 1;
    if (hdr_size)
        memcpy(value, hdr, hdr_size);
    if (body_size)
        memcpy(value + hdr_size, body, body_size);
    self->items[self->count++] = (s_change_t) {
        .op = op,
        .path = buf,
        .path_len = path_len,
        .value = op == S_OP_DEL ? NULL : value,
        .value_size = hdr_size + body_size,
        .buf = owned,
    };
    return AM2Z_OK;
}

/*  Raw values come from processors or peers: one object, and no deeper than
    a state may be, since anything deeper could never be applied. */
static int
s_record_raw(am2z_changes_t *self, s_op_t op, const char *path, size_t path_len,
             const uint8_t *msgpack, size_t size)
{
    int rc = s_path_check(self, path, path_len);
    if (rc != AM2Z_OK)
        return rc;
    if (am2z_msgpack_check(msgpack, size, AM2Z_STATE_DEPTH_MAX) != AM2Z_OK)
        return AM2Z_EPROTO;
    return s_record(self, op, path, path_len, msgpack, size, NULL, 0);
}

/*  A packer target for scalars: a fixed buffer big enough for any scalar
    header (9 bytes for a float64 or int64). */
typedef struct {
    uint8_t bytes[16];
    size_t size;
} s_small_t;

static int
s_small_write(void *data, const char *buf, size_t len)
{
    s_small_t *small = data;
    if (len > sizeof small->bytes - small->size)
        return -1;
    memcpy(small->bytes + small->size, buf, len);
    small->size += len;
    return 0;
}

static void
s_small_init(s_small_t *small, msgpack_packer *pk)
{
    small->size = 0;
    msgpack_packer_init(pk, small, s_small_write);
}

/*  Typed setters build the encoding themselves, so it needs no check. */
static int
s_record_str(am2z_changes_t *self, s_op_t op, const char *path,
             const char *value, size_t len)
{
    if (!path || !value || len > UINT32_MAX)
        return AM2Z_EINVAL;
    s_small_t small;
    msgpack_packer pk;
    s_small_init(&small, &pk);
    msgpack_pack_str(&pk, len);
    return s_record(self, op, path, s_path_len(path), small.bytes, small.size,
                    value, len);
}

static int
s_record_small(am2z_changes_t *self, s_op_t op, const char *path,
               const s_small_t *small)
{
    if (!path)
        return AM2Z_EINVAL;
    return s_record(self, op, path, s_path_len(path), small->bytes, small->size,
                    NULL, 0);
}

int
am2z_changes_set_str(am2z_changes_t *self, const char *path, const char *value)
{
    return s_record_str(self, S_OP_SET, path, value, value ? strlen(value) : 0);
}

int
am2z_changes_set_strn(am2z_changes_t *self, const char *path,
                      const char *value, size_t len)
{
    return s_record_str(self, S_OP_SET, path, value, len);
}

int
am2z_changes_set_int(am2z_changes_t *self, const char *path, int64_t value)
{
    s_small_t small;
    msgpack_packer pk;
    s_small_init(&small, &pk);
    msgpack_pack_int64(&pk, value);
    return s_record_small(self, S_OP_SET, path, &small);
}

int
am2z_changes_set_float(am2z_changes_t *self, const char *path, double value)
{
    s_small_t small;
    msgpack_packer pk;
    s_small_init(&small, &pk);
    msgpack_pack_double(&pk, value);
    return s_record_small(self, S_OP_SET, path, &small);
}

int
am2z_changes_set_bool(am2z_changes_t *self, const char *path, bool value)
{
    s_small_t small;
    msgpack_packer pk;
    s_small_init(&small, &pk);
    if (value)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    return s_record_small(self, S_OP_SET, path, &small);
}

int
am2z_changes_set_nil(am2z_changes_t *self, const char *path)
{
    s_small_t small;
    msgpack_packer pk;
    s_small_init(&small, &pk);
    msgpack_pack_nil(&pk);
    return s_record_small(self, S_OP_SET, path, &small);
}

int
am2z_changes_set_raw(am2z_changes_t *self, const char *path,
                     const uint8_t *msgpack, size_t size)
{
    if (!path)
        return AM2Z_EINVAL;
    return s_record_raw(self, S_OP_SET, path, s_path_len(path), msgpack, size);
}

int
am2z_changes_delete(am2z_changes_t *self, const char *path)
{
    if (!path)
        return AM2Z_EINVAL;
    return s_record(self, S_OP_DEL, path, s_path_len(path), NULL, 0, NULL, 0);
}

int
am2z_changes_append_raw(am2z_changes_t *self, const char *path,
                        const uint8_t *msgpack, size_t size)
{
    if (!path)
        return AM2Z_EINVAL;
    return s_record_raw(self, S_OP_APPEND, path, s_path_len(path), msgpack, size);
}

int
am2z_changes_append_str(am2z_changes_t *self, const char *path, const char *value)
{
    return s_record_str(self, S_OP_APPEND, path, value, value ? strlen(value) : 0);
}

int
am2z_changes_append_int(am2z_changes_t *self, const char *path, int64_t value)
{
    s_small_t small;
    msgpack_packer pk;
    s_small_init(&small, &pk);
    msgpack_pack_int64(&pk, value);
    return s_record_small(self, S_OP_APPEND, path, &small);
}

/*  Writes encoded bytes through a packer (whose target is a sbuffer here). */
static int
s_write(msgpack_packer *pk, const void *bytes, size_t size)
{
    return pk->callback(pk->data, (const char *)bytes, size);
}

int
am2z_changes_encode(const am2z_changes_t *self, uint8_t **data, size_t *size)
{
    if (!self || !data || !size)
        return AM2Z_EINVAL;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int failed = msgpack_pack_array(&pk, self->count);
    for (size_t i = 0; i < self->count && !failed; i++) {
        const s_change_t *c = &self->items[i];
        const char *op = s_op_names[c->op];
        failed = msgpack_pack_array(&pk, c->op == S_OP_DEL ? 2 : 3)
                 || msgpack_pack_str_with_body(&pk, op, strlen(op))
                 || msgpack_pack_str_with_body(&pk, c->path, c->path_len)
                 || (c->op != S_OP_DEL && s_write(&pk, c->value, c->value_size));
    }
    if (failed) {
        msgpack_sbuffer_destroy(&sb);
        return AM2Z_ENOMEM;
    }
    *size = sb.size;
    *data = (uint8_t *)msgpack_sbuffer_release(&sb);
    return AM2Z_OK;
}

/*  Reads a str header at data[*pos..size) into (str, len) and moves *pos
    past it. Returns AM2Z_OK or AM2Z_EPROTO. */
static int
s_read_str(const uint8_t *data, size_t size, size_t *pos, const char **str,
           size_t *len)
{
    s_head_t h;
    if (s_head(data + *pos, size - *pos, &h) != 0 || h.type != AM2Z_VT_STR)
        return AM2Z_EPROTO;
    *str = (const char *)data + *pos + h.hdr;
    *len = (size_t)h.len;
    *pos += h.hdr + (size_t)h.len;
    return AM2Z_OK;
}

int
am2z_changes_decode(const uint8_t *data, size_t size, am2z_changes_t **out)
{
    if (!out)
        return AM2Z_EINVAL;
    *out = NULL;
    /*  Two levels (list, triple) above a value that may itself be as deep
        as a state; s_record_raw() holds each value to the state limit. */
    if (am2z_msgpack_check(data, size, AM2Z_STATE_DEPTH_MAX + 2) != AM2Z_OK)
        return AM2Z_EPROTO;

    int rc = AM2Z_EPROTO;
    am2z_changes_t *self = am2z_changes_new();
    if (!self)
        return AM2Z_ENOMEM;
    size_t pos = 0;
    s_head_t h;
    if (s_head(data, size, &h) != 0 || h.type != AM2Z_VT_ARRAY)
        goto fail;
    pos += h.hdr;
    for (uint64_t i = 0; i < h.count; i++) {
        s_head_t triple;
        if (s_head(data + pos, size - pos, &triple) != 0
            || triple.type != AM2Z_VT_ARRAY || triple.count < 2 || triple.count > 3)
            goto fail;
        pos += triple.hdr;
        const char *name, *path;
        size_t name_len, path_len;
        if (s_read_str(data, size, &pos, &name, &name_len) != AM2Z_OK
            || s_read_str(data, size, &pos, &path, &path_len) != AM2Z_OK)
            goto fail;
        s_op_t op = S_OP_COUNT;
        for (int k = 0; k < S_OP_COUNT; k++)
            if (strlen(s_op_names[k]) == name_len
                && memcmp(s_op_names[k], name, name_len) == 0)
                op = (s_op_t)k;
        if (op == S_OP_COUNT || (op == S_OP_DEL) != (triple.count == 2))
            goto fail;
        if (op == S_OP_DEL) {
            rc = s_record(self, op, path, path_len, NULL, 0, NULL, 0);
        } else {
            size_t value_size = s_skip(data + pos, size - pos);
            if (value_size == 0) {
                rc = AM2Z_EPROTO;
                goto fail;
            }
            rc = s_record_raw(self, op, path, path_len, data + pos, value_size);
            pos += value_size;
        }
        if (rc != AM2Z_OK)
            goto fail;
        rc = AM2Z_EPROTO;
    }
    *out = self;
    return AM2Z_OK;

fail:
    am2z_changes_destroy(&self);
    return rc;
}

/* ---------------------------------------------------------------------------
   The state object
   ------------------------------------------------------------------------ */

/*  Invariants once built: the encoded map (S_DATA, `size` bytes, stored in
    the same block right after the struct) passed am2z_msgpack_check() at
    AM2Z_STATE_DEPTH_MAX and holds exactly one string key "metadata" whose
    fields are cached below. One block holds the struct and the bytes, so a
    state costs one allocation. Reads walk the bytes in place (s_lookup);
    there is no decoded copy to build or free. */
struct am2z_state_t {
    size_t size;                /* bytes of the encoded map */
    size_t meta_at;             /* offset of the metadata map (the value) */
    size_t meta_len;            /* its bytes: lets walks step over it at once */
    uint64_t version;           /* metadata.version, >= 1 */
    uint64_t created_at;        /* metadata.createdAt, ms */
    uint64_t last_updated;      /* metadata.lastUpdated, ms */
    char session_id[AM2Z_SESSION_ID_MAX + 1];   /* metadata.sessionId */
};

/*  The encoded map of a state: the bytes after the struct. */
#define S_DATA(self) ((const uint8_t *)((self) + 1))

/*  Metadata for a state being built. */
typedef struct {
    const char *session_id;
    size_t session_id_len;
    uint64_t version;
    uint64_t created_at;
    uint64_t last_updated;
} s_meta_t;

/*  The string key at p (header h) equals s[0..len). */
static bool
s_key_is(const uint8_t *p, const s_head_t *h, const char *s, size_t len)
{
    return h->type == AM2Z_VT_STR && h->len == len && memcmp(p + h->hdr, s, len) == 0;
}

/*  An integer object at p (header h, type INT): *neg tells which of *u
    (>= 0) or *i (< 0) holds it, as msgpack-c's positive/negative split. */
static void
s_int_read(const uint8_t *p, const s_head_t *h, bool *neg, uint64_t *u, int64_t *i)
{
    uint8_t b = p[0];
    *neg = false;
    *u = 0;
    *i = 0;
    if (b <= 0x7f) {
        *u = b;
    } else if (b >= 0xe0) {
        *neg = true;
        *i = (int8_t)b;
    } else if (b >= 0xcc && b <= 0xcf) {
        *u = am2z_be_read(p + 1, (size_t)h->len);
    } else {                                        /* 0xd0..0xd3 */
        unsigned shift = 64u - 8u * (unsigned)h->len;
        int64_t v = (int64_t)(am2z_be_read(p + 1, (size_t)h->len) << shift) >> shift;
        if (v < 0) {
            *neg = true;
            *i = v;
        } else {
            *u = (uint64_t)v;
        }
    }
}

/*  Validates the metadata map and caches its fields. Unknown metadata keys
    are tolerated (forward compatibility); the known ones must each appear
    once with the right type. The bytes passed am2z_msgpack_check and are a
    map. */
/*  Finds the value of the top-level "metadata" key of the map p[0..n):
    *at, *len its offset and size (*len 0 when there is none). AM2Z_EPROTO
    when p is not a well-formed map or names "metadata" twice. */
static int
s_find_meta(const uint8_t *p, size_t n, size_t *at, size_t *len)
{
    *at = *len = 0;
    s_head_t h;
    if (s_head(p, n, &h) != 0 || h.type != AM2Z_VT_MAP)
        return AM2Z_EPROTO;
    size_t pos = h.hdr;
    for (uint64_t i = 0; i < h.count; i++) {
        s_head_t kh;
        size_t ks = s_skip(p + pos, n - pos);
        if (ks == 0 || s_head(p + pos, n - pos, &kh) != 0)
            return AM2Z_EPROTO;
        bool is_meta = s_key_is(p + pos, &kh, S_METADATA, S_METADATA_LEN);
        pos += ks;
        size_t vs = s_skip(p + pos, n - pos);
        if (vs == 0)
            return AM2Z_EPROTO;
        if (is_meta) {
            if (*len)
                return AM2Z_EPROTO;
            *at = pos;
            *len = vs;
        }
        pos += vs;
    }
    return AM2Z_OK;
}

/*  What a state's metadata map says, read from its encoded bytes. */
typedef struct {
    size_t at, len;             /* where the metadata map (the value) is */
    uint64_t version, created_at, last_updated;
    const char *session_id;     /* borrowed from the bytes, not terminated */
    size_t session_id_len;
} s_meta_read_t;

/*  Reads and checks the metadata of the encoded map p[0..n), which
    am2z_msgpack_check() accepted: a "metadata" map once, with version
    (>= 1), sessionId (valid), createdAt and lastUpdated each once, the
    numbers unsigned. Returns AM2Z_OK or AM2Z_EPROTO. */
static int
s_parse_metadata(const uint8_t *p, size_t n, s_meta_read_t *m)
{
    memset(m, 0, sizeof *m);
    size_t at, meta_n;
    if (s_find_meta(p, n, &at, &meta_n) != AM2Z_OK || meta_n == 0)
        return AM2Z_EPROTO;
    const uint8_t *meta = p + at;
    m->at = at;
    m->len = meta_n;
    s_head_t mh;
    if (s_head(meta, meta_n, &mh) != 0 || mh.type != AM2Z_VT_MAP)
        return AM2Z_EPROTO;

    static const char *const names[] = { "version", "sessionId", "createdAt",
                                         "lastUpdated" };
    static const size_t lens[] = { 7, 9, 9, 11 };
    unsigned seen = 0;
    size_t pos = mh.hdr;
    for (uint64_t i = 0; i < mh.count; i++) {
        s_head_t kh, vh;
        size_t ks = s_skip(meta + pos, meta_n - pos);
        if (ks == 0 || s_head(meta + pos, meta_n - pos, &kh) != 0)
            return AM2Z_EPROTO;
        const uint8_t *key = meta + pos;
        pos += ks;
        size_t vs = s_skip(meta + pos, meta_n - pos);
        if (vs == 0 || s_head(meta + pos, meta_n - pos, &vh) != 0)
            return AM2Z_EPROTO;
        const uint8_t *val = meta + pos;
        pos += vs;
        for (unsigned k = 0; k < 4; k++) {
            if (!s_key_is(key, &kh, names[k], lens[k]))
                continue;
            if (seen & (1u << k))
                return AM2Z_EPROTO;
            seen |= 1u << k;
            if (k == 1) {
                const char *s = (const char *)val + vh.hdr;
                if (vh.type != AM2Z_VT_STR || !am2z_session_id_valid(s, (size_t)vh.len))
                    return AM2Z_EPROTO;
                m->session_id = s;
                m->session_id_len = (size_t)vh.len;
                continue;
            }
            bool neg;
            uint64_t u;
            int64_t iv;
            if (vh.type != AM2Z_VT_INT)
                return AM2Z_EPROTO;
            s_int_read(val, &vh, &neg, &u, &iv);
            if (neg)
                return AM2Z_EPROTO;
            if (k == 0)
                m->version = u;
            else if (k == 2)
                m->created_at = u;
            else
                m->last_updated = u;
        }
    }
    if (seen != 0xf || m->version == 0)
        return AM2Z_EPROTO;
    return AM2Z_OK;
}

/*  The checks of am2z_state_decode on data[0..size): one msgpack map, at
    most AM2Z_STATE_DEPTH_MAX deep, with valid metadata. */
static int
s_check_encoded(const uint8_t *data, size_t size, s_meta_read_t *m)
{
    if (!data || size == 0)
        return AM2Z_EPROTO;
    if (am2z_msgpack_check(data, size, AM2Z_STATE_DEPTH_MAX) != AM2Z_OK
        || data[0] < 0x80 || (data[0] > 0x8f && data[0] != 0xde && data[0] != 0xdf))
        return AM2Z_EPROTO;
    return s_parse_metadata(data, size, m);
}

int
am2z_state_meta_read(const uint8_t *data, size_t size, uint64_t *version,
                     uint64_t *created_at)
{
    if (!version || !created_at)
        return AM2Z_EINVAL;
    *version = *created_at = 0;
    s_meta_read_t m;
    int rc = s_check_encoded(data, size, &m);
    if (rc != AM2Z_OK)
        return rc;
    *version = m.version;
    *created_at = m.created_at;
    return AM2Z_OK;
}

int
am2z_state_peek(const uint8_t *data, size_t size, uint64_t *version)
{
    if (!version)
        return AM2Z_EINVAL;
    *version = 0;
    size_t at, len;
    if (!data || size == 0 || am2z_msgpack_check(data, size, AM2Z_STATE_DEPTH_MAX) != AM2Z_OK
        || s_find_meta(data, size, &at, &len) != AM2Z_OK)
        return AM2Z_EPROTO;
    const uint8_t *meta = data + at;
    s_head_t mh;
    if (len == 0 || s_head(meta, len, &mh) != 0 || mh.type != AM2Z_VT_MAP)
        return AM2Z_OK;               /* no metadata map: no version to read */
    size_t pos = mh.hdr;
    for (uint64_t j = 0; j < mh.count; j++) {
        s_head_t kh, vh;
        size_t ks = s_skip(meta + pos, len - pos);
        if (ks == 0 || s_head(meta + pos, len - pos, &kh) != 0)
            return AM2Z_EPROTO;
        bool is_version = s_key_is(meta + pos, &kh, "version", 7);
        pos += ks;
        size_t vs = s_skip(meta + pos, len - pos);
        if (vs == 0 || s_head(meta + pos, len - pos, &vh) != 0)
            return AM2Z_EPROTO;
        if (is_version && vh.type == AM2Z_VT_INT) {
            bool neg;
            uint64_t u;
            int64_t iv;
            s_int_read(meta + pos, &vh, &neg, &u, &iv);
            if (!neg)
                *version = u;
            return AM2Z_OK;
        }
        pos += vs;
    }
    return AM2Z_OK;
}

void
am2z_state_destroy(am2z_state_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_state_t *self = *self_p;
    free(self);
    *self_p = NULL;
}

/*  A block for a state of `size` bytes (metadata unset). NULL
    when out of memory. */
static am2z_state_t *
s_state_alloc(size_t size)
{
    if (size > SIZE_MAX - sizeof(am2z_state_t))
        return NULL;
    am2z_state_t *self = malloc(sizeof *self + size);
    if (!self)
        return NULL;
    memset(self, 0, sizeof *self);
    self->size = size;
    return self;
}

int
am2z_state_decode(const uint8_t *data, size_t size, am2z_state_t **out)
{
    if (!out)
        return AM2Z_EINVAL;
    *out = NULL;
    s_meta_read_t m;
    int rc = s_check_encoded(data, size, &m);
    if (rc != AM2Z_OK)
        return rc;
    am2z_state_t *self = s_state_alloc(size);
    if (!self)
        return AM2Z_ENOMEM;
    memcpy((uint8_t *)(self + 1), data, size);
    self->meta_at = m.at;
    self->meta_len = m.len;
    self->version = m.version;
    self->created_at = m.created_at;
    self->last_updated = m.last_updated;
    memcpy(self->session_id, m.session_id, m.session_id_len);
    self->session_id[m.session_id_len] = '\0';
    *out = self;
    return AM2Z_OK;
}

am2z_state_t *
am2z_state_dup(const am2z_state_t *self)
{
    if (!self)
        return NULL;
    /*  A valid state copied as it is: one block, no second validation. */
    am2z_state_t *copy = s_state_alloc(self->size);
    if (!copy)
        return NULL;
    memcpy(copy, self, sizeof *copy + self->size);
    return copy;
}

const uint8_t *
am2z_state_data(const am2z_state_t *self)
{
    return self ? S_DATA(self) : NULL;
}

size_t
am2z_state_size(const am2z_state_t *self)
{
    return self ? self->size : 0;
}

uint64_t
am2z_state_version(const am2z_state_t *self)
{
    return self ? self->version : 0;
}

const char *
am2z_state_session_id(const am2z_state_t *self)
{
    return self ? self->session_id : NULL;
}

uint64_t
am2z_state_created_at(const am2z_state_t *self)
{
    return self ? self->created_at : 0;
}

uint64_t
am2z_state_last_updated(const am2z_state_t *self)
{
    return self ? self->last_updated : 0;
}

/* ---------------------------------------------------------------------------
   Building: the edit tree
   ------------------------------------------------------------------------ */

typedef enum {
    S_NODE_RAW = 0,     /* encoded bytes, copied verbatim */
    S_NODE_MAP,         /* opened map: entries in encoding order */
    S_NODE_ARRAY        /* array with appended elements */
} s_kind_t;

typedef struct s_node s_node_t;

/*  A map entry. A key from the source keeps its encoded bytes (so non-string
    keys survive); a key created by a change is a string from its path. */
typedef struct {
    const uint8_t *key;     /* encoded key, or NULL: pack `name` as str */
    size_t key_size;
    const char *name;       /* string key bytes, NULL for non-string keys */
    size_t name_len;
    s_node_t *value;
} s_entry_t;

/*  An encoded slice: one msgpack object, or (array base) several. */
typedef struct {
    const uint8_t *bytes;
    size_t size;
} s_slice_t;

/*  All nodes, entries and slices live in the build zone; bytes are borrowed
    from the source state or the changes, which outlive the build. */
struct s_node {
    s_kind_t kind;
    s_slice_t raw;          /* RAW: the object; ARRAY: the original elements */
    uint64_t base_count;    /* ARRAY: elements in raw */
    s_entry_t *entries;     /* MAP */
    size_t count;           /* MAP: entries; ARRAY: appended */
    size_t cap;
    s_slice_t *appended;    /* ARRAY: elements added by changes, in order */
};

/*  Where a build's tree lives: a small stack buffer first (enough for a
    state of a few dozen keys), then a msgpack_zone made on first need.
    Everything is freed at once when the build ends. */
typedef struct {
    _Alignas(max_align_t) uint8_t stack[2048];
    size_t used;            /* bytes of stack handed out */
    msgpack_zone *zone;     /* owned; NULL until the stack is full */
} s_arena_t;

static void *
s_arena_alloc(s_arena_t *a, size_t size)
{
    size_t need = (size + (_Alignof(max_align_t) - 1)) & ~(_Alignof(max_align_t) - 1);
    if (need >= size && need <= sizeof a->stack - a->used) {
        void *p = a->stack + a->used;
        a->used += need;
        return p;
    }
    if (!a->zone && !(a->zone = msgpack_zone_new(4096)))
        return NULL;
    return msgpack_zone_malloc(a->zone, size);
}

/*  Grows a zone-allocated vector to hold one more element. The old block
    stays in the zone until the build ends: cheaper than tracking frees. */
static int
s_grow(s_arena_t *zone, void **items, size_t count, size_t *cap, size_t elem)
{
    if (count < *cap)
        return AM2Z_OK;
    size_t ncap = *cap ? 2 * *cap : 8;
    void *grown = s_arena_alloc(zone, ncap * elem);
    if (!grown)
        return AM2Z_ENOMEM;
    if (count)
        memcpy(grown, *items, count * elem);
    *items = grown;
    *cap = ncap;
    return AM2Z_OK;
}

static s_node_t *
s_node_new(s_arena_t *zone, s_kind_t kind)
{
    s_node_t *node = s_arena_alloc(zone, sizeof *node);
    if (node)
        *node = (s_node_t) { .kind = kind };
    return node;
}

static int
s_map_push(s_arena_t *zone, s_node_t *map, const s_entry_t *entry)
{
    int rc = s_grow(zone, (void **)&map->entries, map->count, &map->cap,
                    sizeof(s_entry_t));
    if (rc == AM2Z_OK)
        map->entries[map->count++] = *entry;
    return rc;
}

static s_entry_t *
s_map_find(s_node_t *map, const char *name, size_t len)
{
    for (size_t i = 0; i < map->count; i++) {
        s_entry_t *e = &map->entries[i];
        if (e->name && e->name_len == len && memcmp(e->name, name, len) == 0)
            return e;
    }
    return NULL;
}

/*  Opens a RAW map node into a MAP node, every value a RAW child. With
    drop_metadata, string keys "metadata" are left out (the top level); a
    value starting at `meta` (the source state's metadata map, or NULL) is
    meta_len bytes long, so it need not be walked.
    Returns AM2Z_OK, AM2Z_ETYPE (not a map), AM2Z_EPROTO or AM2Z_ENOMEM. */
static int
s_open_map(s_arena_t *zone, s_node_t *node, bool drop_metadata, const uint8_t *meta,
           size_t meta_len)
{
    const uint8_t *p = node->raw.bytes;
    size_t n = node->raw.size;
    s_head_t h;
    if (s_head(p, n, &h) != 0)
        return AM2Z_EPROTO;
    if (h.type != AM2Z_VT_MAP)
        return AM2Z_ETYPE;
    node->kind = S_NODE_MAP;
    node->entries = NULL;
    node->count = node->cap = 0;
    size_t pos = h.hdr;
    for (uint64_t i = 0; i < h.count; i++) {
        s_entry_t e = { .key = p + pos };
        s_head_t kh;
        e.key_size = s_skip(p + pos, n - pos);
        if (e.key_size == 0 || s_head(p + pos, n - pos, &kh) != 0)
            return AM2Z_EPROTO;
        if (kh.type == AM2Z_VT_STR) {
            e.name = (const char *)p + pos + kh.hdr;
            e.name_len = (size_t)kh.len;
        }
        pos += e.key_size;
        size_t value_size = p + pos == meta ? meta_len : s_skip(p + pos, n - pos);
        if (value_size == 0)
            return AM2Z_EPROTO;
        bool skip = drop_metadata && e.name && e.name_len == S_METADATA_LEN
                    && memcmp(e.name, S_METADATA, S_METADATA_LEN) == 0;
        if (!skip) {
            e.value = s_node_new(zone, S_NODE_RAW);
            if (!e.value)
                return AM2Z_ENOMEM;
            e.value->raw = (s_slice_t) { p + pos, value_size };
            int rc = s_map_push(zone, node, &e);
            if (rc != AM2Z_OK)
                return rc;
        }
        pos += value_size;
    }
    return AM2Z_OK;
}

/*  Adds one element to the array at `node` (RAW array or ARRAY); a RAW
    array becomes an ARRAY whose base is its original elements. */
static int
s_array_append(s_arena_t *zone, s_node_t *node, const s_change_t *c)
{
    if (node->kind == S_NODE_RAW) {
        s_head_t h;
        if (s_head(node->raw.bytes, node->raw.size, &h) != 0)
            return AM2Z_EPROTO;
        if (h.type != AM2Z_VT_ARRAY)
            return AM2Z_ETYPE;
        node->kind = S_NODE_ARRAY;
        node->raw.bytes += h.hdr;
        node->raw.size -= h.hdr;
        node->base_count = h.count;
        node->count = node->cap = 0;
        node->appended = NULL;
    } else if (node->kind != S_NODE_ARRAY) {
        return AM2Z_ETYPE;
    }
    if (node->base_count + node->count >= UINT32_MAX)
        return AM2Z_ERESOURCE;
    int rc = s_grow(zone, (void **)&node->appended, node->count, &node->cap,
                    sizeof(s_slice_t));
    if (rc == AM2Z_OK)
        node->appended[node->count++] = (s_slice_t) { c->value, c->value_size };
    return rc;
}

/*  Applies one change to the tree rooted at the MAP `root`. */
static int
s_apply_change(s_arena_t *zone, s_node_t *root, const s_change_t *c)
{
    s_node_t *map = root;
    const char *seg = c->path;
    const char *end = c->path + c->path_len;
    const char *dot;
    int rc;
    /*  Walk to the map holding the last segment, opening maps on the way. */
    while ((dot = memchr(seg, '.', (size_t)(end - seg))) != NULL) {
        size_t len = (size_t)(dot - seg);
        s_entry_t *e = s_map_find(map, seg, len);
        if (!e) {
            if (c->op == S_OP_DEL)
                return AM2Z_OK;
            s_entry_t fresh = { .name = seg, .name_len = len,
                                .value = s_node_new(zone, S_NODE_MAP) };
            if (!fresh.value)
                return AM2Z_ENOMEM;
            rc = s_map_push(zone, map, &fresh);
            if (rc != AM2Z_OK)
                return rc;
            map = fresh.value;
        } else {
            if (e->value->kind == S_NODE_RAW) {
                rc = s_open_map(zone, e->value, false, NULL, 0);
                if (rc != AM2Z_OK)
                    return rc;
            } else if (e->value->kind != S_NODE_MAP) {
                return AM2Z_ETYPE;
            }
            map = e->value;
        }
        seg = dot + 1;
    }

    size_t len = (size_t)(end - seg);
    s_entry_t *e = s_map_find(map, seg, len);
    switch (c->op) {
    case S_OP_SET: {
        s_node_t *value = s_node_new(zone, S_NODE_RAW);
        if (!value)
            return AM2Z_ENOMEM;
        value->raw = (s_slice_t) { c->value, c->value_size };
        if (e) {
            e->value = value;
            return AM2Z_OK;
        }
        s_entry_t fresh = { .name = seg, .name_len = len, .value = value };
        return s_map_push(zone, map, &fresh);
    }
    case S_OP_DEL: {
        /*  Every entry with this name goes, so a map that arrived with a
            duplicate key cannot show the older value after a delete. */
        size_t kept = 0;
        for (size_t i = 0; i < map->count; i++) {
            const s_entry_t *x = &map->entries[i];
            if (!(x->name && x->name_len == len && memcmp(x->name, seg, len) == 0))
                map->entries[kept++] = *x;
        }
        map->count = kept;
        return AM2Z_OK;
    }
    case S_OP_APPEND:
        if (!e) {
            s_entry_t fresh = { .name = seg, .name_len = len,
                                .value = s_node_new(zone, S_NODE_ARRAY) };
            if (!fresh.value)
                return AM2Z_ENOMEM;
            rc = s_map_push(zone, map, &fresh);
            if (rc != AM2Z_OK)
                return rc;
            e = &map->entries[map->count - 1];
        }
        return s_array_append(zone, e->value, c);
    default:
        return AM2Z_EINVAL;
    }
}

/*  The packer target of a build: a state block growing as bytes come in,
    so the finished encoding needs no copy. */
typedef struct {
    am2z_state_t *block;    /* owned until adopted; data after the struct */
    size_t size;            /* encoded bytes written */
    size_t cap;             /* room for encoded bytes */
    size_t meta_at;         /* where s_pack_state put the metadata map */
    size_t meta_len;        /* and its bytes */
} s_out_t;

static int
s_out_write(void *data, const char *buf, size_t len)
{
    s_out_t *o = data;
    if (len == 0)
        return 0;                   /* an empty body may come as NULL */
    if (len > o->cap - o->size) {
        size_t cap = 2 * o->cap > o->size + len ? 2 * o->cap : o->size + len;
        am2z_state_t *grown = realloc(o->block, sizeof *grown + cap);
        if (!grown)
            return -1;
        o->block = grown;
        o->cap = cap;
    }
    memcpy((uint8_t *)(o->block + 1) + o->size, buf, len);
    o->size += len;
    return 0;
}

/*  Packs a tree node. Recursion depth is bounded by the number of path
    segments (at most AM2Z_PATH_LEN_MAX / 2 + 1): only changed maps are
    nodes below the root. Returns 0 or -1 (out of memory / too many). */
static int
s_pack_node(msgpack_packer *pk, const s_node_t *node)
{
    switch (node->kind) {
    case S_NODE_RAW:
        return s_write(pk, node->raw.bytes, node->raw.size);
    case S_NODE_MAP:
        if (node->count > UINT32_MAX || msgpack_pack_map(pk, node->count))
            return -1;
        for (size_t i = 0; i < node->count; i++) {
            const s_entry_t *e = &node->entries[i];
            int failed = e->key ? s_write(pk, e->key, e->key_size)
                                : msgpack_pack_str_with_body(pk, e->name, e->name_len);
            if (failed || s_pack_node(pk, e->value))
                return -1;
        }
        return 0;
    case S_NODE_ARRAY:
        if (msgpack_pack_array(pk, (size_t)node->base_count + node->count)
            || s_write(pk, node->raw.bytes, node->raw.size))
            return -1;
        for (size_t i = 0; i < node->count; i++)
            if (s_write(pk, node->appended[i].bytes, node->appended[i].size))
                return -1;
        return 0;
    }
    return -1;
}

/*  Packs a string literal (its length known at compile time). */
#define S_PACK_LIT(pk, lit) msgpack_pack_str_with_body((pk), (lit), sizeof(lit) - 1)

/*  The whole state: metadata first, then the root's entries in order. */
static int
s_pack_state(msgpack_packer *pk, const s_meta_t *meta, const s_node_t *root)
{
    if (root->count >= UINT32_MAX)
        return -1;
    s_out_t *o = pk->data;
    int failed = msgpack_pack_map(pk, root->count + 1)
        || S_PACK_LIT(pk, S_METADATA);
    o->meta_at = o->size;
    failed = failed
        || msgpack_pack_map(pk, 4)
        || S_PACK_LIT(pk, "version")
        || msgpack_pack_uint64(pk, meta->version)
        || S_PACK_LIT(pk, "sessionId")
        || msgpack_pack_str_with_body(pk, meta->session_id, meta->session_id_len)
        || S_PACK_LIT(pk, "createdAt")
        || msgpack_pack_uint64(pk, meta->created_at)
        || S_PACK_LIT(pk, "lastUpdated")
        || msgpack_pack_uint64(pk, meta->last_updated);
    o->meta_len = o->size - o->meta_at;
    for (size_t i = 0; i < root->count && !failed; i++) {
        const s_entry_t *e = &root->entries[i];
        failed = (e->key ? s_write(pk, e->key, e->key_size)
                         : msgpack_pack_str_with_body(pk, e->name, e->name_len))
                 || s_pack_node(pk, e->value);
    }
    return failed ? -1 : 0;
}

/*  False when no change can make the state deeper than the limit: every
    change is a delete or sets a scalar at a path of few segments (a path of
    k segments puts the value under k maps; the source already passed the
    depth check, and opening its maps adds no depth). */
static bool
s_may_deepen(const am2z_changes_t *changes)
{
    for (size_t i = 0; changes && i < changes->count; i++) {
        const s_change_t *c = &changes->items[i];
        if (c->op == S_OP_DEL)
            continue;
        s_head_t h;
        if (c->op != S_OP_SET || s_head(c->value, c->value_size, &h) != 0
            || h.type == AM2Z_VT_MAP || h.type == AM2Z_VT_ARRAY)
            return true;
        size_t segments = 1;
        for (const char *d = c->path; (d = memchr(d, '.', c->path_len - (size_t)(d - c->path)));
             d++)
            segments++;
        if (segments >= AM2Z_STATE_DEPTH_MAX)
            return true;
    }
    return false;
}

/*  Builds a state whose user keys are those of `src` (one validated map, or
    NULL for none) with `changes` applied (NULL for none). Returns AM2Z_OK,
    AM2Z_ETYPE, AM2Z_ERESOURCE (larger than max_size when non-zero, or
    nested deeper than AM2Z_STATE_DEPTH_MAX) or AM2Z_ENOMEM. */
static int
s_build(const uint8_t *src, size_t src_size, const am2z_state_t *src_state,
        const am2z_changes_t *changes, const s_meta_t *meta, size_t max_size,
        am2z_state_t **out)
{
    /*  Room for the source, every change's path and value, and metadata:
        enough for the usual build, so the block is allocated once. */
    size_t cap = src_size + meta->session_id_len + 96;
    for (size_t i = 0; changes && i < changes->count; i++)
        cap += changes->items[i].path_len + changes->items[i].value_size + 10;
    s_out_t o = { .block = s_state_alloc(cap), .cap = cap };
    if (!o.block)
        return AM2Z_ENOMEM;
    s_arena_t zone;
    zone.used = 0;
    zone.zone = NULL;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &o, s_out_write);
    int rc;

    s_node_t root = { .kind = S_NODE_MAP };
    if (src) {
        root = (s_node_t) { .kind = S_NODE_RAW, .raw = { src, src_size } };
        rc = s_open_map(&zone, &root, true,
                        src_state ? src + src_state->meta_at : NULL,
                        src_state ? src_state->meta_len : 0);
        if (rc != AM2Z_OK)
            goto done;
    }
    for (size_t i = 0; changes && i < changes->count; i++) {
        rc = s_apply_change(&zone, &root, &changes->items[i]);
        if (rc != AM2Z_OK)
            goto done;
    }
    if (s_pack_state(&pk, meta, &root) != 0) {
        rc = AM2Z_ENOMEM;
        goto done;
    }
    if (max_size && o.size > max_size) {
        rc = AM2Z_ERESOURCE;
        goto done;
    }
    /*  The bytes are our own encoding of validated parts with the metadata
        we wrote; the one way they can be invalid is a change that nested
        values too deep, so the structure is checked again when a change
        could have done that (s_may_deepen). */
    if (s_may_deepen(changes)
        && am2z_msgpack_check((const uint8_t *)(o.block + 1), o.size,
                              AM2Z_STATE_DEPTH_MAX) != AM2Z_OK) {
        rc = AM2Z_ERESOURCE;
        goto done;
    }
    am2z_state_t *self = o.block;
    o.block = NULL;
    self->size = o.size;
    self->meta_at = o.meta_at;
    self->meta_len = o.meta_len;
    self->version = meta->version;
    self->created_at = meta->created_at;
    self->last_updated = meta->last_updated;
    memcpy(self->session_id, meta->session_id, meta->session_id_len);
    self->session_id[meta->session_id_len] = '\0';
    *out = self;
    rc = AM2Z_OK;

done:
    free(o.block);
    if (zone.zone)
        msgpack_zone_free(zone.zone);
    return rc;
}

static int
s_meta_init(s_meta_t *meta, const char *session_id, uint64_t version,
            uint64_t created_at, uint64_t last_updated)
{
    if (!session_id)
        return AM2Z_EINVAL;
    size_t len = strnlen(session_id, AM2Z_SESSION_ID_MAX + 1);
    if (!am2z_session_id_valid(session_id, len) || version == 0)
        return AM2Z_EINVAL;
    *meta = (s_meta_t) { session_id, len, version, created_at, last_updated };
    return AM2Z_OK;
}

int
am2z_state_new(const char *session_id, uint64_t now_ms, am2z_state_t **out)
{
    return am2z_state_from_map(session_id, NULL, 0, now_ms, out);
}

int
am2z_state_from_map(const char *session_id, const uint8_t *user_map,
                    size_t user_map_size, uint64_t now_ms, am2z_state_t **out)
{
    return am2z_state_from_map_meta(session_id, user_map, user_map_size, 1, now_ms, now_ms,
                                    out);
}

int
am2z_state_from_map_meta(const char *session_id, const uint8_t *user_map,
                         size_t user_map_size, uint64_t version, uint64_t created_at_ms,
                         uint64_t last_updated_ms, am2z_state_t **out)
{
    if (!out)
        return AM2Z_EINVAL;
    *out = NULL;
    s_meta_t meta;
    int rc = s_meta_init(&meta, session_id, version, created_at_ms, last_updated_ms);
    if (rc != AM2Z_OK)
        return rc;
    if (user_map_size == 0)
        user_map = NULL;
    if (user_map) {
        s_head_t h;
        if (am2z_msgpack_check(user_map, user_map_size, AM2Z_STATE_DEPTH_MAX) != AM2Z_OK
            || s_head(user_map, user_map_size, &h) != 0 || h.type != AM2Z_VT_MAP)
            return AM2Z_EPROTO;
    }
    return s_build(user_map, user_map_size, NULL, NULL, &meta, 0, out);
}

int
am2z_state_with_metadata(const am2z_state_t *self, const char *session_id,
                         uint64_t version, uint64_t created_at_ms,
                         uint64_t last_updated_ms, am2z_state_t **out)
{
    if (!out)
        return AM2Z_EINVAL;
    *out = NULL;
    if (!self)
        return AM2Z_EINVAL;
    s_meta_t meta;
    int rc = s_meta_init(&meta, session_id, version, created_at_ms, last_updated_ms);
    if (rc != AM2Z_OK)
        return rc;
    return s_build(S_DATA(self), self->size, self, NULL, &meta, 0, out);
}

int
am2z_state_apply(const am2z_state_t *input, const am2z_changes_t *changes,
                 uint64_t now_ms, size_t max_size, am2z_state_t **out)
{
    if (!out)
        return AM2Z_EINVAL;
    *out = NULL;
    if (!input)
        return AM2Z_EINVAL;
    if (input->version == UINT64_MAX)
        return AM2Z_ERESOURCE;
    s_meta_t meta = {
        .session_id = input->session_id,
        .session_id_len = strlen(input->session_id),
        .version = input->version + 1,
        .created_at = input->created_at,
        .last_updated = now_ms,
    };
    return s_build(S_DATA(input), input->size, input, changes, &meta, max_size, out);
}

/* ---------------------------------------------------------------------------
   Reading
   ------------------------------------------------------------------------ */

/*  The value at `path`, walking the encoded bytes: *vp points at its first
    byte, *vn counts the bytes from there to the end of the state, *vh is its
    header. Returns AM2Z_OK, AM2Z_EINVAL or AM2Z_ENOTFOUND (also when a
    segment meets a scalar). */
static int
s_lookup(const am2z_state_t *self, const char *path, const uint8_t **vp, size_t *vn,
         s_head_t *vh)
{
    if (!self || !path)
        return AM2Z_EINVAL;
    size_t len = s_path_len(path);
    if (!s_path_ok(path, len))
        return AM2Z_EINVAL;
    const uint8_t *cur = S_DATA(self);
    size_t n = self->size;
    const char *seg = path;
    const char *end = path + len;
    while (true) {
        const char *dot = memchr(seg, '.', (size_t)(end - seg));
        size_t seglen = dot ? (size_t)(dot - seg) : (size_t)(end - seg);
        s_head_t h;
        uint32_t index;
        if (s_head(cur, n, &h) != 0)
            return AM2Z_ENOTFOUND;
        size_t pos = h.hdr;
        bool found = false;
        if (h.type == AM2Z_VT_MAP) {
            for (uint64_t i = 0; i < h.count && !found; i++) {
                s_head_t kh;
                size_t ks = s_skip(cur + pos, n - pos);
                if (ks == 0 || s_head(cur + pos, n - pos, &kh) != 0)
                    return AM2Z_ENOTFOUND;
                found = s_key_is(cur + pos, &kh, seg, seglen);
                pos += ks;
                if (!found) {
                    size_t vs = cur + pos == S_DATA(self) + self->meta_at
                                    ? self->meta_len : s_skip(cur + pos, n - pos);
                    if (vs == 0)
                        return AM2Z_ENOTFOUND;
                    pos += vs;
                }
            }
        } else if (h.type == AM2Z_VT_ARRAY && s_path_index(seg, seglen, &index)
                   && index < h.count) {
            for (uint32_t i = 0; i < index; i++) {
                size_t vs = s_skip(cur + pos, n - pos);
                if (vs == 0)
                    return AM2Z_ENOTFOUND;
                pos += vs;
            }
            found = true;
        }
        if (!found)
            return AM2Z_ENOTFOUND;
        cur += pos;
        n -= pos;
        if (!dot)
            break;
        seg = dot + 1;
    }
    if (s_head(cur, n, vh) != 0)
        return AM2Z_ENOTFOUND;
    *vp = cur;
    *vn = n;
    return AM2Z_OK;
}

bool
am2z_state_has(const am2z_state_t *self, const char *path)
{
    const uint8_t *p;
    size_t n;
    s_head_t h;
    return s_lookup(self, path, &p, &n, &h) == AM2Z_OK;
}

int
am2z_state_type(const am2z_state_t *self, const char *path, am2z_vtype_t *type)
{
    const uint8_t *p;
    size_t n;
    s_head_t h;
    if (!type)
        return AM2Z_EINVAL;
    int rc = s_lookup(self, path, &p, &n, &h);
    if (rc != AM2Z_OK)
        return rc;
    *type = h.type;
    return AM2Z_OK;
}

int
am2z_state_get_str(const am2z_state_t *self, const char *path,
                   const char **str, size_t *len)
{
    const uint8_t *p;
    size_t n;
    s_head_t h;
    if (!str || !len)
        return AM2Z_EINVAL;
    int rc = s_lookup(self, path, &p, &n, &h);
    if (rc != AM2Z_OK)
        return rc;
    if (h.type != AM2Z_VT_STR)
        return AM2Z_ETYPE;
    *str = (const char *)p + h.hdr;
    *len = (size_t)h.len;
    return AM2Z_OK;
}

int
am2z_state_get_strcpy(const am2z_state_t *self, const char *path,
                      char *buf, size_t buf_size)
{
    const char *s;
    size_t len;
    if (!buf)
        return AM2Z_EINVAL;
    int rc = am2z_state_get_str(self, path, &s, &len);
    if (rc != AM2Z_OK)
        return rc;
    if (len >= buf_size)
        return AM2Z_ERESOURCE;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return AM2Z_OK;
}

int
am2z_state_get_int(const am2z_state_t *self, const char *path, int64_t *value)
{
    const uint8_t *p;
    size_t n;
    s_head_t h;
    if (!value)
        return AM2Z_EINVAL;
    int rc = s_lookup(self, path, &p, &n, &h);
    if (rc != AM2Z_OK)
        return rc;
    if (h.type != AM2Z_VT_INT)
        return AM2Z_ETYPE;
    bool neg;
    uint64_t u;
    int64_t i;
    s_int_read(p, &h, &neg, &u, &i);
    if (neg) {
        *value = i;
        return AM2Z_OK;
    }
    if (u > INT64_MAX)
        return AM2Z_ERESOURCE;
    *value = (int64_t)u;
    return AM2Z_OK;
}

int
am2z_state_get_float(const am2z_state_t *self, const char *path, double *value)
{
    const uint8_t *p;
    size_t n;
    s_head_t h;
    if (!value)
        return AM2Z_EINVAL;
    int rc = s_lookup(self, path, &p, &n, &h);
    if (rc != AM2Z_OK)
        return rc;
    if (h.type == AM2Z_VT_FLOAT && h.len == 4) {
        uint32_t bits = (uint32_t)am2z_be_read(p + 1, 4);
        float f;
        memcpy(&f, &bits, sizeof f);
        *value = f;
    } else if (h.type == AM2Z_VT_FLOAT) {
        uint64_t bits = am2z_be_read(p + 1, 8);
        memcpy(value, &bits, sizeof *value);
    } else if (h.type == AM2Z_VT_INT) {
        bool neg;
        uint64_t u;
        int64_t i;
        s_int_read(p, &h, &neg, &u, &i);
        *value = neg ? (double)i : (double)u;
    } else {
        return AM2Z_ETYPE;
    }
    return AM2Z_OK;
}

int
am2z_state_get_bool(const am2z_state_t *self, const char *path, bool *value)
{
    const uint8_t *p;
    size_t n;
    s_head_t h;
    if (!value)
        return AM2Z_EINVAL;
    int rc = s_lookup(self, path, &p, &n, &h);
    if (rc != AM2Z_OK)
        return rc;
    if (h.type != AM2Z_VT_BOOL)
        return AM2Z_ETYPE;
    *value = p[0] == 0xc3;
    return AM2Z_OK;
}

int
am2z_state_get_nil(const am2z_state_t *self, const char *path)
{
    const uint8_t *p;
    size_t n;
    s_head_t h;
    int rc = s_lookup(self, path, &p, &n, &h);
    if (rc != AM2Z_OK)
        return rc;
    return h.type == AM2Z_VT_NIL ? AM2Z_OK : AM2Z_ETYPE;
}

int
am2z_state_get_count(const am2z_state_t *self, const char *path, size_t *count)
{
    const uint8_t *p;
    size_t n;
    s_head_t h;
    if (!count)
        return AM2Z_EINVAL;
    int rc = s_lookup(self, path, &p, &n, &h);
    if (rc != AM2Z_OK)
        return rc;
    if (h.type != AM2Z_VT_ARRAY && h.type != AM2Z_VT_MAP)
        return AM2Z_ETYPE;
    *count = (size_t)h.count;
    return AM2Z_OK;
}

int
am2z_state_get_raw(const am2z_state_t *self, const char *path,
                   uint8_t **data, size_t *size)
{
    if (!self || !path || !data || !size)
        return AM2Z_EINVAL;
    const uint8_t *p = S_DATA(self);
    size_t n = self->size;
    if (path[0] != '\0') {
        s_head_t h;
        int rc = s_lookup(self, path, &p, &n, &h);
        if (rc != AM2Z_OK)
            return rc;
        n = s_skip(p, n);
        if (n == 0)
            return AM2Z_EPROTO;
    }
    uint8_t *copy = malloc(n);
    if (!copy)
        return AM2Z_ENOMEM;
    memcpy(copy, p, n);
    *data = copy;
    *size = n;
    return AM2Z_OK;
}
