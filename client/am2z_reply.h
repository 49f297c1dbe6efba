/*  am2z_reply.h — private: decodes the `data` of a broker REPLY into the
    client's typed structs (docs/BEHAVIOUR.md "Queries").

    This is the client's codec file: it is the only client file that reads
    msgpack. Every function validates the bytes (am2z_msgpack_check) before
    unpacking them, copies what it keeps into owned memory, and returns
    AM2Z_OK, AM2Z_EPROTO (not the documented shape; err explains) or
    AM2Z_ENOMEM. Unknown keys are ignored; missing counters read as 0.

    Thread safety: reentrant.
*/
#ifndef AM2Z_REPLY_H_INCLUDED
#define AM2Z_REPLY_H_INCLUDED

#include "am2z_client.h"

#include <stddef.h>
#include <stdint.h>

/*  stats: {uptimeMs, processors, workers, sessions, running, waiting,
    completed, failed}. */
int am2z_reply_decode_stats(const uint8_t *data, size_t size, am2z_stats_t *out,
                            char *err, size_t err_size);

/*  queues / session-stats: {name: {waiting, active, completed, failed,
    delayed, paused}}. Caller owns *out. */
int am2z_reply_decode_queues(const uint8_t *data, size_t size,
                             am2z_queue_list_t **out, char *err, size_t err_size);

/*  sessions: [id, ...]; processors: [{name, ...}, ...] (plain strings are
    accepted too). Each element's string (or its "name") becomes an item.
    Caller owns *out. */
int am2z_reply_decode_strlist(const uint8_t *data, size_t size,
                              am2z_strlist_t **out, char *err, size_t err_size);

/*  dlq: [{job, proc, session, attempt, created, failed, error, state?}].
    Caller owns *out. */
int am2z_reply_decode_dlq(const uint8_t *data, size_t size, am2z_dlq_list_t **out,
                          char *err, size_t err_size);

/*  session-info: [{id, created, lastActivity, queued, running, completed,
    failed}, ...] or one such map (a list of one). Caller owns *out. */
int am2z_reply_decode_sessions(const uint8_t *data, size_t size,
                               am2z_session_list_t **out, char *err, size_t err_size);

/*  repeats: [{id, proc, session, every, limit, runs, next, created, last?}].
    Caller owns *out. */
int am2z_reply_decode_repeats(const uint8_t *data, size_t size, am2z_repeat_list_t **out,
                              char *err, size_t err_size);

/*  STOP_SESSION: {ok, cancelled, abandoned}. Missing counters read as 0. */
int am2z_reply_decode_stop(const uint8_t *data, size_t size, am2z_stop_report_t *out,
                           char *err, size_t err_size);

#endif
