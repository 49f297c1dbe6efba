/*  am2z_testproc.h — real processes for integration and fault tests.

    Tests start the real daemons (am2z-broker, am2z-example-worker, am2z)
    as child processes, wait for the line they print when ready, and stop
    them with real signals. Every wait is bounded.
*/
#ifndef AM2Z_TESTPROC_H_INCLUDED
#define AM2Z_TESTPROC_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;                    /* 0 when not running */
    int out_fd;                   /* read end of the child's stdout, or -1 */
    char line[1024];              /* the ready line, once read */
} am2z_testproc_t;

/*  Starts argv[0] (a path) with argv, stdout piped to us, stderr inherited
    (so its logs land in the test log). The child gets SIGKILL when the
    thread that started it dies (PR_SET_PDEATHSIG), and every child still
    running when this process exits is SIGKILLed by an atexit hook, so a
    failing test never leaves daemons behind. Returns 0 or -1. */
int am2z_testproc_start(am2z_testproc_t *p, char *const argv[]);

/*  A free TCP port on 127.0.0.1 in 20000..31999: below the kernel's
    ephemeral range and CZMQ's "tcp://...:*" range (49152 and up), so that
    nothing else on the machine — a parallel test binding "*", an outgoing
    connection — takes it while a broker that owns it is down between a kill
    and its restart. Fails the test when none is found. */
int am2z_testproc_free_port(void);

/*  Reads the child's stdout until a line containing `needle` arrives or
    timeout_ms passes; the line is kept in p->line. Returns 0 or -1. */
int am2z_testproc_wait_line(am2z_testproc_t *p, const char *needle, int timeout_ms);

/*  Copies the value of `key=` in p->line (up to the next space) into out.
    Returns 0 or -1. */
int am2z_testproc_field(const am2z_testproc_t *p, const char *key,
                        char *out, size_t out_size);

/*  Sends sig, then waits up to timeout_ms for the exit. Returns the exit
    status as waitpid gives it (WIFEXITED...), or -1 if it did not exit (it
    is then SIGKILLed and reaped). */
int am2z_testproc_stop(am2z_testproc_t *p, int sig, int timeout_ms);

/*  Runs a command to completion (bounded), capturing stdout into out (NUL-
    terminated, truncated to out_size). Returns the exit code, or -1 on
    failure/timeout. */
int am2z_testproc_run(char *const argv[], char *out, size_t out_size,
                      int timeout_ms);

#endif
