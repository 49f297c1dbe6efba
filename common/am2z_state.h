/*  am2z_state.h — AppState: an immutable, versioned msgpack map.

    A state is one msgpack map. The reserved key "metadata" holds
        { "version": uint >= 1, "sessionId": str,
          "createdAt": uint ms, "lastUpdated": uint ms }
    and every other key is the user's. A state object is immutable once
    built: reads never change it, and am2z_state_apply() builds a new one.

    Paths: "a.b.c" walks nested maps by key; a path segment that is a decimal
    number indexes an array when the value at that point is an array (reads
    only). Keys containing '.' cannot be addressed by path. Paths are 1..256
    bytes; empty segments ("a..b", ".a") are invalid. The top-level key
    "metadata" is reserved: changes may not touch it. Only string keys are
    addressable; other keys are kept as they are. If a map holds a key twice,
    reads see the first; set replaces the first; delete removes all.
    A read whose path meets a scalar before its last segment is
    AM2Z_ENOTFOUND.

    Changes are recorded into an am2z_changes_t (set / delete / append) and
    applied in the order they were recorded. Setting a path creates missing
    intermediate maps; setting, deleting or appending through an existing
    non-map value is AM2Z_ETYPE. Deleting a missing path (or below one) is
    not an error. Append adds one element to the array at a path (creating
    the array when the path is missing). Raw values are kept byte for byte.

    Encoding: "metadata" first, then the user keys in order; a key a change
    creates goes last. Unknown metadata fields are accepted on decode and
    dropped when the metadata is rewritten (apply, with_metadata).

    Depth: a state nests at most AM2Z_STATE_DEPTH_MAX containers (the top
    map counts as one), the limit of msgpack-c's unpacker. Deeper bytes are
    AM2Z_EPROTO on decode; a raw change value deeper than that is
    AM2Z_EPROTO when recorded; an apply whose result would be deeper is
    AM2Z_ERESOURCE.

    Every decode validates: a state whose bytes are not exactly one msgpack
    map with a well-formed metadata map is AM2Z_EPROTO.

    Thread safety: a state may be read by many threads at once (reads are
    const); changes and states are otherwise owned by one thread at a time.
*/
#ifndef AM2Z_STATE_H_INCLUDED
#define AM2Z_STATE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AM2Z_PATH_LEN_MAX 256
#define AM2Z_STATE_DEPTH_MAX 32
/*  Largest metadata.version a submitted state may carry: the largest
    integer a JSON or JavaScript peer reads exactly (2^53 - 1). Versions
    grow by one per step, so a session never gets near UINT64_MAX, where
    am2z_state_apply would have to refuse. */
#define AM2Z_STATE_VERSION_MAX ((uint64_t)9007199254740991)

typedef struct am2z_state_t am2z_state_t;
typedef struct am2z_changes_t am2z_changes_t;

/*  Value types as seen by readers. */
typedef enum {
    AM2Z_VT_NIL = 0,
    AM2Z_VT_BOOL,
    AM2Z_VT_INT,      /* any msgpack integer (positive or negative) */
    AM2Z_VT_FLOAT,
    AM2Z_VT_STR,
    AM2Z_VT_BIN,
    AM2Z_VT_ARRAY,
    AM2Z_VT_MAP,
    AM2Z_VT_EXT
} am2z_vtype_t;

/* ---------------------------------------------------------------------------
   Building and decoding
   ------------------------------------------------------------------------ */

/*  A fresh state: version 1, createdAt = lastUpdated = now_ms, no user keys.
    session_id must be valid (am2z_session_id_valid). Returns AM2Z_OK,
    AM2Z_EINVAL or AM2Z_ENOMEM; *out is owned by the caller. */
int am2z_state_new(const char *session_id, uint64_t now_ms, am2z_state_t **out);

/*  A version-1 state whose user keys are those of `user_map` (one msgpack
    map; a "metadata" key in it is ignored and replaced). NULL/0 bytes means
    no user keys. Returns AM2Z_OK, AM2Z_EINVAL (bad session id), AM2Z_EPROTO
    (user_map is not exactly one msgpack map) or AM2Z_ENOMEM. */
int am2z_state_from_map(const char *session_id, const uint8_t *user_map,
                        size_t user_map_size, uint64_t now_ms,
                        am2z_state_t **out);

/*  As am2z_state_from_map, with the metadata given (as for
    am2z_state_with_metadata): one build instead of from_map followed by
    with_metadata. Returns AM2Z_OK, AM2Z_EINVAL (bad session id or version
    0), AM2Z_EPROTO (user_map is not exactly one msgpack map), AM2Z_ENOMEM. */
int am2z_state_from_map_meta(const char *session_id, const uint8_t *user_map,
                             size_t user_map_size, uint64_t version,
                             uint64_t created_at_ms, uint64_t last_updated_ms,
                             am2z_state_t **out);

/*  Decodes and validates encoded state bytes (copied as they are, so the
    bytes of am2z_state_data() equal the input). Returns AM2Z_OK, AM2Z_EINVAL
    (out is NULL), AM2Z_EPROTO (not one map / metadata missing, duplicated,
    mistyped, version 0, invalid sessionId / too deep) or AM2Z_ENOMEM. */
int am2z_state_decode(const uint8_t *data, size_t size, am2z_state_t **out);

/*  Checks data[0..size) exactly as am2z_state_decode does and reads its
    metadata.version and metadata.createdAt, without building a state (no
    allocation, no copy). Returns AM2Z_OK, AM2Z_EPROTO (what decode
    refuses) or AM2Z_EINVAL (NULL version / created_at); on error both are
    0. */
int am2z_state_meta_read(const uint8_t *data, size_t size, uint64_t *version,
                         uint64_t *created_at);

/*  Checks what a state decode would check of its structure without
    building one: data is one msgpack map nested at most
    AM2Z_STATE_DEPTH_MAX deep. *version is its metadata.version when the
    map has a "metadata" map with an unsigned integer "version", else 0.
    Allocates nothing. Returns AM2Z_OK or AM2Z_EPROTO (not one map, nested
    too deep, or "metadata" twice); AM2Z_EINVAL for NULL version. */
int am2z_state_peek(const uint8_t *data, size_t size, uint64_t *version);

/*  Same state with metadata replaced: version, sessionId and timestamps set
    as given; user keys unchanged. Used by the broker to rebase a submitted
    state onto the stored version. Returns AM2Z_OK, AM2Z_EINVAL (bad session
    id or version 0), AM2Z_ENOMEM. */
int am2z_state_with_metadata(const am2z_state_t *self, const char *session_id,
                             uint64_t version, uint64_t created_at_ms,
                             uint64_t last_updated_ms, am2z_state_t **out);

/*  Deep copy (one allocation; the bytes are not validated again). Returns
    NULL only when out of memory. */
am2z_state_t *am2z_state_dup(const am2z_state_t *self);

/*  NULL-safe, idempotent. */
void am2z_state_destroy(am2z_state_t **self_p);

/*  The encoded map. Borrowed until the state is destroyed. */
const uint8_t *am2z_state_data(const am2z_state_t *self);
size_t am2z_state_size(const am2z_state_t *self);

/*  Metadata. session id is borrowed until the state is destroyed. */
uint64_t am2z_state_version(const am2z_state_t *self);
const char *am2z_state_session_id(const am2z_state_t *self);
uint64_t am2z_state_created_at(const am2z_state_t *self);
uint64_t am2z_state_last_updated(const am2z_state_t *self);

/* ---------------------------------------------------------------------------
   Reading (paths as described above; "metadata.version" works too)
   Each returns AM2Z_OK, AM2Z_EINVAL (bad path), AM2Z_ENOTFOUND (no value at
   path) or AM2Z_ETYPE (value has another type).
   ------------------------------------------------------------------------ */
bool am2z_state_has(const am2z_state_t *self, const char *path);
int am2z_state_type(const am2z_state_t *self, const char *path, am2z_vtype_t *type);
/*  String bytes are borrowed until the state is destroyed; NOT NUL-terminated. */
int am2z_state_get_str(const am2z_state_t *self, const char *path,
                       const char **str, size_t *len);
/*  As get_str, but copies into a caller buffer with NUL; AM2Z_ERESOURCE when
    it does not fit. */
int am2z_state_get_strcpy(const am2z_state_t *self, const char *path,
                          char *buf, size_t buf_size);
/*  Integers: any msgpack int that fits int64_t (else AM2Z_ERESOURCE). */
int am2z_state_get_int(const am2z_state_t *self, const char *path, int64_t *value);
/*  Floats: msgpack float32/float64; integers are converted too. */
int am2z_state_get_float(const am2z_state_t *self, const char *path, double *value);
int am2z_state_get_bool(const am2z_state_t *self, const char *path, bool *value);
/*  AM2Z_OK when the value is nil, AM2Z_ETYPE when it is something else. */
int am2z_state_get_nil(const am2z_state_t *self, const char *path);
/*  Element count of an array or map at path. */
int am2z_state_get_count(const am2z_state_t *self, const char *path, size_t *count);
/*  The bytes of the value at path (one msgpack object, as stored). Caller
    owns *data (free()). An empty path returns the whole state. */
int am2z_state_get_raw(const am2z_state_t *self, const char *path,
                       uint8_t **data, size_t *size);

/* ---------------------------------------------------------------------------
   Changes
   ------------------------------------------------------------------------ */

/*  Returns NULL only when out of memory. Caller owns it. */
am2z_changes_t *am2z_changes_new(void);
void am2z_changes_destroy(am2z_changes_t **self_p);

/*  Each records one change. Returns AM2Z_OK, AM2Z_EINVAL (bad path, or a
    path under the reserved "metadata" key), AM2Z_EPROTO (raw bytes are not
    exactly one msgpack object) or AM2Z_ENOMEM. Values are copied. */
int am2z_changes_set_str(am2z_changes_t *self, const char *path, const char *value);
int am2z_changes_set_strn(am2z_changes_t *self, const char *path,
                          const char *value, size_t len);
int am2z_changes_set_int(am2z_changes_t *self, const char *path, int64_t value);
int am2z_changes_set_float(am2z_changes_t *self, const char *path, double value);
int am2z_changes_set_bool(am2z_changes_t *self, const char *path, bool value);
int am2z_changes_set_nil(am2z_changes_t *self, const char *path);
int am2z_changes_set_raw(am2z_changes_t *self, const char *path,
                         const uint8_t *msgpack, size_t size);
int am2z_changes_delete(am2z_changes_t *self, const char *path);
int am2z_changes_append_raw(am2z_changes_t *self, const char *path,
                            const uint8_t *msgpack, size_t size);
int am2z_changes_append_str(am2z_changes_t *self, const char *path, const char *value);
int am2z_changes_append_int(am2z_changes_t *self, const char *path, int64_t value);

/*  Number of recorded changes. */
size_t am2z_changes_count(const am2z_changes_t *self);

/*  Wire form: a msgpack array of [op, path, value?] triples, op one of
    "set", "del", "append". Encode: caller owns *data (free()).
    Decode validates every element (AM2Z_EPROTO on anything else) and the
    same path rules as recording (AM2Z_EINVAL). */
int am2z_changes_encode(const am2z_changes_t *self, uint8_t **data, size_t *size);
int am2z_changes_decode(const uint8_t *data, size_t size, am2z_changes_t **out);

/*  Builds the next state: input's user keys with every change applied in
    order, metadata.version = input version + 1, lastUpdated = now_ms,
    sessionId and createdAt kept. The input is never modified. Returns
    AM2Z_OK, AM2Z_ETYPE (a path runs through a non-map, or append to a
    non-array), AM2Z_ERESOURCE (result larger than max_size; 0 = no limit)
    or AM2Z_ENOMEM. */
int am2z_state_apply(const am2z_state_t *input, const am2z_changes_t *changes,
                     uint64_t now_ms, size_t max_size, am2z_state_t **out);

#ifdef __cplusplus
}
#endif
#endif
