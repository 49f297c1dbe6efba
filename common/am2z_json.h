/*  am2z_json.h — msgpack <-> JSON, for the CLI, logs and the HTTP API.

    jansson does every bit of JSON text; this module only maps values.

    msgpack -> JSON
        nil, bool, float   null, true/false, real (NaN and +-Inf become null:
                           JSON has no spelling for them)
        int                integer; an unsigned value above INT64_MAX becomes
                           a real (JSON numbers have no exact form for it in
                           jansson)
        str                string; a str that is not valid UTF-8 becomes
                           {"$bin": base64} (JSON strings must be UTF-8)
        bin                {"$bin": base64}
        ext                {"$ext": type, "data": base64}
        array              array
        map                object; a string key is used as is, any other key
                           is stringified (an integer as its decimal digits,
                           anything else as its compact JSON text); when two
                           keys map to the same text the later one wins

    JSON -> msgpack
        integers stay integers (smallest msgpack int form), reals become
        float64, strings str, and the two tagged objects above ({"$bin": s}
        with exactly that key, {"$ext": n, "data": s} with exactly those
        keys) turn back into bin and ext, so every msgpack value survives a
        round trip except NaN/Inf, non-UTF-8 str (comes back as bin),
        non-string map keys (come back as strings) and uint64 above
        INT64_MAX (comes back as float64).

    Depth is limited to AM2Z_JSON_MAX_DEPTH both ways: deeper input is
    refused, never a stack overflow.

    Thread safety: reentrant.
*/
#ifndef AM2Z_JSON_H_INCLUDED
#define AM2Z_JSON_H_INCLUDED

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AM2Z_JSON_MAX_DEPTH 64

/*  Converts exactly one msgpack object (validated with am2z_msgpack_check
    first) into a new JSON value. Caller owns *out (json_decref). Returns
    AM2Z_OK, AM2Z_EINVAL (NULL arguments), AM2Z_EPROTO (not one well-formed
    msgpack object, or deeper than AM2Z_JSON_MAX_DEPTH) or AM2Z_ENOMEM. */
int am2z_json_from_msgpack(const uint8_t *data, size_t size, json_t **out);

/*  Converts a JSON value to one msgpack object. Caller owns *data (free()).
    Returns AM2Z_OK, AM2Z_EINVAL (NULL arguments, a malformed "$bin"/"$ext"
    tag, or deeper than AM2Z_JSON_MAX_DEPTH) or AM2Z_ENOMEM. */
int am2z_json_to_msgpack(const json_t *json, uint8_t **data, size_t *size);

/*  msgpack bytes as JSON text. flags are jansson's json_dumps flags
    (0 = compact, one line; JSON_INDENT(2) pretty-prints). Caller owns *out
    (free()). Returns as am2z_json_from_msgpack. */
int am2z_json_dumps_msgpack(const uint8_t *data, size_t size, size_t flags,
                            char **out);

/*  Parses JSON text (one value; trailing garbage refused) into msgpack.
    Caller owns *data (free()). On AM2Z_EINVAL err (when given) reads like
    "invalid JSON at line 1, column 9: unexpected token near '}'". Returns
    AM2Z_OK, AM2Z_EINVAL or AM2Z_ENOMEM. */
int am2z_json_parse_to_msgpack(const char *text, uint8_t **data, size_t *size,
                               char *err, size_t err_size);

/*  Base64 (RFC 4648, with padding). encode: caller owns the NUL-terminated
    *out. decode: refuses anything but canonical padded base64
    (AM2Z_EINVAL); caller owns *out. Both may return AM2Z_ENOMEM. */
int am2z_base64_encode(const uint8_t *data, size_t size, char **out);
int am2z_base64_decode(const char *text, size_t len, uint8_t **out,
                       size_t *out_size);

#ifdef __cplusplus
}
#endif
#endif
