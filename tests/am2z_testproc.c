/*  am2z_testproc.c — see am2z_testproc.h. */
#include "am2z_testproc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long
s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*  Children started by this process, for the atexit hook. A forked test
    case (Check's CK_FORK) inherits the list and the hook: it must leave
    alone the daemons its parent started for the whole suite, so each entry
    remembers which process started it. */
static pid_t s_kids[256];
static pid_t s_owner[256];
static size_t s_nkids;

static void
s_kill_kids(void)
{
    for (size_t i = 0; i < s_nkids; i++)
        if (s_owner[i] == getpid() && s_kids[i] > 0 && kill(s_kids[i], 0) == 0) {
            kill(s_kids[i], SIGKILL);
            waitpid(s_kids[i], NULL, 0);
        }
}

int
am2z_testproc_start(am2z_testproc_t *p, char *const argv[])
{
    memset(p, 0, sizeof *p);
    p->out_fd = -1;
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    if (s_nkids == 0)
        atexit(s_kill_kids);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(126);            /* the parent died before prctl took */
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    p->pid = pid;
    p->out_fd = fds[0];
    if (s_nkids < sizeof s_kids / sizeof s_kids[0]) {
        s_owner[s_nkids] = parent;
        s_kids[s_nkids++] = pid;
    }
    return 0;
}

int
am2z_testproc_free_port(void)
{
    static unsigned seed;
    if (!seed)
        seed = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL);
    for (int tries = 0; tries < 200; tries++) {
        seed = seed * 1103515245u + 12345u;
        int port = 20000 + (int)((seed >> 8) % 12000);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            break;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok)
            return port;
    }
    ck_abort_msg("no free TCP port on 127.0.0.1");
    return -1;
}

int
am2z_testproc_wait_line(am2z_testproc_t *p, const char *needle, int timeout_ms)
{
    long long deadline = s_now_ms() + timeout_ms;
    size_t len = 0;
    while (p->out_fd >= 0) {
        long long left = deadline - s_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd pfd = { .fd = p->out_fd, .events = POLLIN };
        int n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        char c;
        ssize_t r = read(p->out_fd, &c, 1);
        if (r <= 0)
            return -1;             /* the child closed stdout: it died */
        if (c == '\n') {
            p->line[len] = '\0';
            if (strstr(p->line, needle))
                return 0;
            len = 0;
        } else if (len + 1 < sizeof p->line) {
            p->line[len++] = c;
        }
    }
    return -1;
}

int
am2z_testproc_field(const am2z_testproc_t *p, const char *key, char *out,
                    size_t out_size)
{
    char pattern[128];
    snprintf(pattern, sizeof pattern, "%s=", key);
    const char *at = p->line;
    while ((at = strstr(at, pattern)) != NULL) {
        if (at == p->line || at[-1] == ' ')
            break;
        at++;
    }
    if (!at)
        return -1;
    at += strlen(pattern);
    size_t n = strcspn(at, " ");
    if (n + 1 > out_size)
        return -1;
    memcpy(out, at, n);
    out[n] = '\0';
    return 0;
}

int
am2z_testproc_stop(am2z_testproc_t *p, int sig, int timeout_ms)
{
    if (p->pid <= 0)
        return -1;
    kill(p->pid, sig);
    long long deadline = s_now_ms() + timeout_ms;
    int status = -1;
    while (true) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid)
            break;
        if (s_now_ms() > deadline) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
            status = -1;
            break;
        }
        struct timespec ts = { 0, 5 * 1000 * 1000 };
        nanosleep(&ts, NULL);      /* polling waitpid: no SIGCHLD plumbing */
    }
    if (p->out_fd >= 0)
        close(p->out_fd);
    p->out_fd = -1;
    p->pid = 0;
    return status;
}

int
am2z_testproc_run(char *const argv[], char *out, size_t out_size, int timeout_ms)
{
    am2z_testproc_t p;
    if (am2z_testproc_start(&p, argv) != 0)
        return -1;
    long long deadline = s_now_ms() + timeout_ms;
    size_t len = 0;
    bool eof = false;
    while (!eof) {
        long long left = deadline - s_now_ms();
        if (left <= 0)
            break;
        struct pollfd pfd = { .fd = p.out_fd, .events = POLLIN };
        int n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        char buf[4096];
        ssize_t r = read(p.out_fd, buf, sizeof buf);
        if (r <= 0) {
            eof = true;
            break;
        }
        size_t take = (size_t)r;
        if (out && len + take + 1 > out_size)
            take = out_size - len - 1;
        if (out) {
            memcpy(out + len, buf, take);
            len += take;
        }
    }
    if (out && out_size)
        out[len] = '\0';
    long long left = deadline - s_now_ms();
    int status = am2z_testproc_stop(&p, eof ? 0 : SIGKILL, left > 0 ? (int)left : 1);
    if (!eof || status == -1 || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}
