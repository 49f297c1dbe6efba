/*  am2z_sys.h — process set-up shared by the daemons (am2z-broker, workers).

    Every ZeroMQ socket is a file descriptor (and libzmq caps sockets at
    1,023 by default), and a worker runs one socket per actor thread, so a
    worker with many processors × a high concurrency runs out long before
    the machine does. Daemons call this first thing, before any socket.

    Thread safety: call once, from main, before other threads start.
*/
#ifndef AM2Z_SYS_H_INCLUDED
#define AM2Z_SYS_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Raises the open-file soft limit to the hard limit and lets libzmq use
    as many sockets as that allows. *fds (may be NULL) receives the
    resulting soft limit. Returns AM2Z_OK, or AM2Z_EIO when the limit could
    not be read (nothing changed). */
int am2z_sys_raise_limits(uint64_t *fds);

/*  Confines the calling thread, and so every thread it starts afterwards
    (ZeroMQ's I/O thread, a worker's actors), to the CPUs in list: a
    comma-separated list of CPU numbers and ranges ("0", "2-3", "0,2-3").
    "" (or NULL) changes nothing. Call from main before the first socket.
    On this project's 2-vCPU benchmark VM a process kept on one core hands
    messages between its threads without cross-CPU wake-ups: round trip
    p50 ≈ 370 -> 290 µs with the broker on one core and the worker on the
    other, throughput −17–23 % (docs/benchmarks.md). Returns AM2Z_OK or
    AM2Z_ECONFIG (err names the problem: the syntax, or a CPU this process
    may not use). */
int am2z_sys_set_cpus(const char *list, char *err, size_t err_size);

/*  How many CPUs the calling thread may run on (its affinity mask), or 0
    when that cannot be read. */
unsigned am2z_sys_cpus_allowed(void);

#ifdef __cplusplus
}
#endif
#endif
