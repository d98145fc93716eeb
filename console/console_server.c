/* console_server.c — the console's threads: the UNIX socket listener with one thread per
 * session, and the serial line (raw termios, our own echo and line editing, password login
 * with lockout). Both run commands through the shared interpreter (console.c). */
#include "console/console_server.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

struct console_client {
    int fd;                       /* -1 = free slot */
    pthread_t thread;
    bool done;                    /* the thread has finished; join it */
};

struct console_server {
    struct console *c;
    struct config_console cfg;    /* copied at start: the caller's may change under a live config set */
    _Atomic bool stop;            /* set by console_server_stop; read by every console thread */
    int listen_fd, serial_fd;     /* -1 = not used */
    bool have_listener, have_serial;
    pthread_t listener, serial;
    pthread_mutex_t lock;         /* guards client[] */
    struct console_client client[CONSOLE_CLIENTS_MAX];
    char socket_path[CONFIG_SOCKET_MAX];
};

/* ---- helpers ---- */

static bool stopping(struct console_server *s)
{
    return atomic_load_explicit(&s->stop, memory_order_acquire);   /* partner: console_server_stop */
}

/* A socket is written with MSG_NOSIGNAL (a closed session is -EIO here, not SIGPIPE for the
 * process); the serial line, not a socket, with write. */
static int write_all(int fd, const char *p, size_t n)
{
    bool sock = true;
    while (n) {
        ssize_t w = sock ? send(fd, p, n, MSG_NOSIGNAL) : write(fd, p, n);
        if (w < 0 && sock && errno == ENOTSOCK) {
            sock = false;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -EIO;
        p += w, n -= (size_t)w;
    }
    return 0;
}

static uint64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/* Waits until fd is readable or the server stops; with idle_ms > 0, gives up with -ETIMEDOUT
 * once idle_ms have passed since `since` (mono_ms). Returns 1 readable, 0 stopping, -errno. */
static int wait_readable(struct console_server *s, int fd, uint64_t idle_ms, uint64_t since)
{
    while (!stopping(s)) {
        if (idle_ms && mono_ms() - since >= idle_ms)
            return -ETIMEDOUT;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int n = poll(&p, 1, CONSOLE_POLL_MS);
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n > 0)
            return 1;
    }
    return 0;
}

/* ---- UNIX socket ---- */

/* Reads one '\n'-terminated line byte by byte (no read-ahead: `stats watch` reads the same
 * fd for its key). Returns 1 with a line in buf, 0 at EOF/stop, -E2BIG (line too long,
 * discarded), -EILSEQ (a NUL byte in it, which would cut the command short: discarded),
 * -ENODATA (the client's end came before the line's '\n': discarded, as it may be cut short),
 * -ETIMEDOUT (no byte for the idle time) or -errno. */
static int socket_line(struct console_server *s, int fd, char *buf, size_t cap)
{
    size_t len = 0;
    bool too_long = false, nul = false;
    for (;;) {
        /* a session silent for [console] idle_timeout_s (0 = never) is closed */
        int r = wait_readable(s, fd, (uint64_t)s->cfg.idle_timeout_s * 1000u, mono_ms());
        if (r <= 0)
            return r;
        char ch;
        ssize_t n = read(fd, &ch, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)   /* the end with part of a line read: -ENODATA (it may be cut short: never run) */
            return n < 0 ? -errno : len ? -ENODATA : 0;
        if (ch == '\n')
            break;
        if (ch == 0)
            nul = true;
        if (len + 1 < cap)
            buf[len++] = ch;
        else
            too_long = true;
    }
    buf[len] = 0;
    return too_long ? -E2BIG : nul ? -EILSEQ : 1;
}

/* Runs one command line for a socket session; writes answer + end marker. */
static int socket_command(struct console_server *s, int fd, const char *line)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (!out)
        return -ENOMEM;
    int rc = console_exec_line(s->c, line, false, out);
    fclose(out);
    int w = write_all(fd, text, len);
    free(text);
    if (w)
        return w;
    if (rc == CONSOLE_WATCH) {
        int wfd = dup(fd);
        FILE *wf = wfd >= 0 ? fdopen(wfd, "w") : NULL;
        if (!wf) {
            if (wfd >= 0)
                close(wfd);
            return -ENOMEM;
        }
        bool json = strstr(line, "--json") != NULL;
        int r = console_watch(s->c, fd, wf, json, &s->stop);
        fclose(wf);
        rc = r ? CONSOLE_ERROR : CONSOLE_OK;
    }
    char end[16];
    int n = snprintf(end, sizeof end, "%c%d\n", CONSOLE_END_BYTE, rc);
    w = write_all(fd, end, (size_t)n);
    return w ? w : rc == CONSOLE_QUIT ? 1 : 0;
}

struct session_arg {
    struct console_server *s;
    int slot;
};

static void *socket_session(void *p)
{
    struct session_arg a = *(struct session_arg *)p;
    free(p);
    struct console_server *s = a.s;
    int fd = s->client[a.slot].fd;
    char line[CONSOLE_LINE_MAX];
    for (;;) {
        int r = socket_line(s, fd, line, sizeof line);
        if (r == -E2BIG) {
            static const char msg[] = "error: command line too long\n\0" "2\n";
            if (write_all(fd, msg, sizeof msg - 1))
                break;
            continue;
        }
        if (r == -EILSEQ) {
            static const char msg[] = "error: command line holds a NUL byte: not run\n\0" "2\n";
            if (write_all(fd, msg, sizeof msg - 1))
                break;
            continue;
        }
        if (r == -ENODATA) {   /* `printf drain | socat …`: said, not run ("cancel 12" cut to "cancel 1") */
            static const char msg[] = "error: the input ended inside a line (no newline): not run\n\0" "2\n";
            (void)write_all(fd, msg, sizeof msg - 1);
            break;
        }
        if (r == -ETIMEDOUT) {   /* sessions are few (CONSOLE_CLIENTS_MAX): free a forgotten one */
            char msg[96];
            int n = snprintf(msg, sizeof msg, "error: console session silent for %u s: closed\n",
                             (unsigned)s->cfg.idle_timeout_s);
            if (n > 0 && (size_t)n + 3 < sizeof msg) {   /* + the end marker, as after a command */
                n += snprintf(msg + n, sizeof msg - (size_t)n, "%c%d\n", CONSOLE_END_BYTE, CONSOLE_ERROR);
                (void)write_all(fd, msg, (size_t)n);
            }
            break;
        }
        if (r <= 0 || socket_command(s, fd, line))
            break;
    }
    pthread_mutex_lock(&s->lock);
    close(fd);
    s->client[a.slot].fd = -1;
    s->client[a.slot].done = true;
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Joins finished sessions; returns a free slot or -1. Caller holds s->lock. */
static int slot_take(struct console_server *s)
{
    int free_slot = -1;
    for (int i = 0; i < CONSOLE_CLIENTS_MAX; i++) {
        if (s->client[i].done) {
            pthread_join(s->client[i].thread, NULL);
            s->client[i].done = false;
        }
        if (s->client[i].fd < 0 && free_slot < 0 && !s->client[i].done)
            free_slot = i;
    }
    return free_slot;
}

static void socket_accept_one(struct console_server *s)
{
    int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    pthread_mutex_lock(&s->lock);
    int slot = slot_take(s);
    struct session_arg *a = slot >= 0 ? malloc(sizeof *a) : NULL;
    if (!a) {
        pthread_mutex_unlock(&s->lock);
        static const char msg[] = "error: too many console sessions\n\0" "1\n";
        (void)write_all(fd, msg, sizeof msg - 1);
        close(fd);
        return;
    }
    *a = (struct session_arg){ s, slot };
    /* a client that stops reading (a stalled SSH link under `stats watch`) fails its session's
     * writes after this long instead of holding the session, and shutdown, forever */
    const struct timeval snd = { .tv_sec = CONSOLE_SEND_TIMEOUT_S };
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof snd);
    s->client[slot].fd = fd;
    if (pthread_create(&s->client[slot].thread, NULL, socket_session, a)) {
        s->client[slot].fd = -1;
        free(a);
        close(fd);
    }
    pthread_mutex_unlock(&s->lock);
}

static void *socket_listener(void *p)
{
    struct console_server *s = p;
    while (wait_readable(s, s->listen_fd, 0, 0) > 0)
        socket_accept_one(s);
    return NULL;
}

/* A user or group given as a name or a numeric id. Returns 0 or -ENOENT. */
static int id_resolve(const char *name, bool group, unsigned *out)
{
    char *end;
    unsigned long v = strtoul(name, &end, 10);
    if (*name && !*end) {
        *out = (unsigned)v;
        return 0;
    }
    char buf[4096];
    if (group) {
        struct group g, *r = NULL;
        if (getgrnam_r(name, &g, buf, sizeof buf, &r) || !r)
            return -ENOENT;
        *out = r->gr_gid;
    } else {
        struct passwd pw, *r = NULL;
        if (getpwnam_r(name, &pw, buf, sizeof buf, &r) || !r)
            return -ENOENT;
        *out = r->pw_uid;
    }
    return 0;
}

/* For a socket path that does not exist: the nearest folder above it that does (into dir), and
 * why a socket cannot be made under it (0: it can): it is no folder (ENOTDIR), not writable, or a
 * filesystem that makes no entries even for root (/proc, /sys: access() says yes there), which a
 * probe folder made and removed at once finds out. */
static int socket_dir_problem(const char *path, char *dir, size_t n)
{
    snprintf(dir, n, "%s", path);
    struct stat sd;
    for (;;) {
        char *slash = strrchr(dir, '/');
        if (!slash)
            snprintf(dir, n, ".");        /* relative: under the working folder */
        else if (slash == dir)
            slash[1] = 0;                 /* "/" */
        else
            *slash = 0;
        if (stat(dir, &sd) == 0)
            break;
        if (errno != ENOENT || !slash || slash == dir)
            return errno;
    }
    if (!S_ISDIR(sd.st_mode))
        return ENOTDIR;
    if (access(dir, W_OK | X_OK))
        return errno;
    char probe[PATH_MAX];
    if ((size_t)snprintf(probe, sizeof probe, "%s/.bora-check-XXXXXX", dir) >= sizeof probe)
        return ENAMETOOLONG;
    if (!mkdtemp(probe))
        return errno;
    rmdir(probe);
    return 0;
}

int console_server_check(const struct config_console *cfg,
                         void (*report)(void *ctx, const char *key, const char *msg), void *ctx)
{
    unsigned id;
    int n = 0;
    struct bora_err err = { "" };
#define PROBLEM(key, ...)                                                                                              \
    do {                                                                                                               \
        bora_errf(&err, -EINVAL, __VA_ARGS__);                                                                         \
        report(ctx, key, err.msg);                                                                                     \
        n++;                                                                                                           \
    } while (0)
    if (cfg->socket[0] && cfg->socket_owner[0] && id_resolve(cfg->socket_owner, false, &id))
        PROBLEM("console.socket_owner", "key 'console.socket_owner': no such user (got '%s')", cfg->socket_owner);
    if (cfg->socket[0] && cfg->socket_group[0] && id_resolve(cfg->socket_group, true, &id))
        PROBLEM("console.socket_group", "key 'console.socket_group': no such group (got '%s')", cfg->socket_group);
    struct stat sk;
    if (cfg->socket[0] && lstat(cfg->socket, &sk) == 0 && !S_ISSOCK(sk.st_mode))   /* the start refuses it */
        PROBLEM("console.socket", "key 'console.socket': exists and is not a socket (got '%s')", cfg->socket);
    else if (cfg->socket[0] && lstat(cfg->socket, &sk) != 0) {
        /* not there yet: the start creates its missing folders, then binds; so the nearest folder
         * that exists must be a folder this process may write in */
        char dir[sizeof cfg->socket];
        const int e = socket_dir_problem(cfg->socket, dir, sizeof dir);
        if (e)
            PROBLEM("console.socket", "key 'console.socket': the socket cannot be made in '%s': %s (got '%s')", dir,
                    e == ENOTDIR ? "not a directory" : strerror(e), cfg->socket);
    }
    if (cfg->serial[0]) {
        struct stat st;
        if (stat(cfg->serial, &st) < 0)
            PROBLEM("console.serial", "key 'console.serial': %s (got '%s')", strerror(errno), cfg->serial);
        else if (!S_ISCHR(st.st_mode))
            PROBLEM("console.serial", "key 'console.serial': not a character device (got '%s')", cfg->serial);
        else {   /* a character device that is no terminal (/dev/null) cannot carry a login */
            int fd = open(cfg->serial, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
            if (fd >= 0 && !isatty(fd))
                PROBLEM("console.serial", "key 'console.serial': not a terminal (got '%s')", cfg->serial);
            if (fd >= 0)
                close(fd);
        }
    }
#undef PROBLEM
    return n;
}

/* A socket file nobody answers on is left over from a crash: remove it. */
static int socket_clear_stale(const struct sockaddr_un *a, struct bora_err *err)
{
    struct stat st;
    if (lstat(a->sun_path, &st))
        return 0;
    if (!S_ISSOCK(st.st_mode))
        return bora_errf(err, -EEXIST, "console socket '%s': exists and is not a socket", a->sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return bora_errf(err, -errno, "console socket: socket(): %s", strerror(errno));
    int live = connect(fd, (const struct sockaddr *)a, sizeof *a) == 0;
    close(fd);
    if (live)
        return bora_errf(err, -EADDRINUSE, "console socket '%s': another daemon is listening on it",
                         a->sun_path);
    unlink(a->sun_path);
    return 0;
}

/* Creates the socket's directory (e.g. /run/bora after a reboot), mode 0755, parents first. */
static int socket_dir_ensure(const char *path, struct bora_err *err)
{
    char dir[sizeof ((struct sockaddr_un *)0)->sun_path];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = 0;
    for (char *p = dir + 1;; p++) {
        bool end = *p == 0;
        if (*p == '/' || end) {
            *p = 0;
            if (mkdir(dir, 0755) && errno != EEXIST)
                return bora_errf(err, -errno, "console socket '%s': cannot create directory '%s': %s "
                                 "(set [console] socket to a writable path)", path, dir, strerror(errno));
            if (end)
                break;
            *p = '/';
        }
    }
    return 0;
}

static int socket_open(struct console_server *s, struct bora_err *err)
{
    const struct config_console *cfg = &s->cfg;
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(cfg->socket) >= sizeof a.sun_path)
        return bora_errf(err, -ENAMETOOLONG, "console socket '%s': path too long", cfg->socket);
    strcpy(a.sun_path, cfg->socket);
    int rc = socket_dir_ensure(cfg->socket, err);
    if (rc)
        return rc;
    rc = socket_clear_stale(&a, err);
    if (rc)
        return rc;
    unsigned uid = (unsigned)-1, gid = (unsigned)-1;
    if (cfg->socket_owner[0] && id_resolve(cfg->socket_owner, false, &uid))
        return bora_errf(err, -ENOENT, "key 'console.socket_owner': no such user (got '%s')", cfg->socket_owner);
    if (cfg->socket_group[0] && id_resolve(cfg->socket_group, true, &gid))
        return bora_errf(err, -ENOENT, "key 'console.socket_group': no such group (got '%s')", cfg->socket_group);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return bora_errf(err, -errno, "console socket: socket(): %s", strerror(errno));
    /* bind under a umask that leaves nobody else a window before the chmod */
    mode_t old = umask(0177);
    rc = bind(fd, (struct sockaddr *)&a, sizeof a);
    umask(old);
    if (rc) {
        rc = -errno;
        close(fd);
        return bora_errf(err, rc, "console socket '%s': bind: %s", cfg->socket, strerror(-rc));
    }
    if (chmod(cfg->socket, cfg->socket_mode) ||
        ((uid != (unsigned)-1 || gid != (unsigned)-1) && chown(cfg->socket, uid, gid)) ||
        listen(fd, CONSOLE_CLIENTS_MAX)) {
        rc = -errno;
        close(fd);
        unlink(cfg->socket);
        return bora_errf(err, rc, "console socket '%s': %s", cfg->socket, strerror(-rc));
    }
    s->listen_fd = fd;
    snprintf(s->socket_path, sizeof s->socket_path, "%s", cfg->socket);
    return 0;
}

/* ---- serial line ---- */

/* fopencookie writer that turns "\n" into "\r\n" for a terminal in raw mode. */
static ssize_t crlf_write(void *cookie, const char *buf, size_t n)
{
    int fd = *(int *)cookie;
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (buf[i] != '\n')
            continue;
        if (write_all(fd, buf + start, i - start) || write_all(fd, "\r\n", 2))
            return -1;
        start = i + 1;
    }
    if (write_all(fd, buf + start, n - start))
        return -1;
    return (ssize_t)n;
}

static speed_t baud_speed(uint32_t baud)
{
    static const struct { uint32_t b; speed_t s; } t[] = {
        { 1200, B1200 }, { 2400, B2400 }, { 4800, B4800 }, { 9600, B9600 }, { 19200, B19200 },
        { 38400, B38400 }, { 57600, B57600 }, { 115200, B115200 }, { 230400, B230400 },
        { 460800, B460800 }, { 921600, B921600 },
    };
    for (size_t i = 0; i < BORA_ARRAY_LEN(t); i++)
        if (t[i].b == baud)
            return t[i].s;
    return B115200;
}

static int serial_open(struct console_server *s, struct bora_err *err)
{
    int fd = open(s->cfg.serial, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return bora_errf(err, -errno, "key 'console.serial': cannot open '%s': %s", s->cfg.serial,
                         strerror(errno));
    struct termios t;
    if (tcgetattr(fd, &t)) {
        int rc = -errno;
        close(fd);
        return bora_errf(err, rc, "key 'console.serial': '%s' is not a terminal: %s", s->cfg.serial,
                         strerror(-rc));
    }
    cfmakeraw(&t);
    t.c_cflag |= CLOCAL | CREAD;
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    cfsetispeed(&t, baud_speed(s->cfg.baud));
    cfsetospeed(&t, baud_speed(s->cfg.baud));
    if (tcsetattr(fd, TCSANOW, &t)) {
        int rc = -errno;
        close(fd);
        return bora_errf(err, rc, "key 'console.serial': cannot configure '%s': %s", s->cfg.serial,
                         strerror(-rc));
    }
    s->serial_fd = fd;
    return 0;
}

enum { LINE_OK = 1, LINE_EOF = 0, LINE_LONG = 2 };

/* Reads a line from the terminal with our own editing: echo (unless !echo), backspace,
 * Ctrl-U (kill), Ctrl-C (discard), Ctrl-D on an empty line (EOF); a tab is a space. Returns
 * LINE_OK, LINE_EOF, 0-on-stop, LINE_LONG (more than cap - 1 bytes were typed: the line is
 * dropped whole, never run cut short; buf empty), or -errno. */
static int serial_line(struct console_server *s, char *buf, size_t cap, bool echo, bool *saw_cr)
{
    int fd = s->serial_fd;
    size_t len = 0;
    bool over = false;
    for (;;) {
        int r = wait_readable(s, fd, 0, 0);
        if (r <= 0)
            return r ? r : LINE_EOF;
        unsigned char ch;
        ssize_t n = read(fd, &ch, 1);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0) {
            /* the other end of the line hung up; wait for it to come back */
            struct timespec ts = { 0, CONSOLE_POLL_MS * 1000000L };
            nanosleep(&ts, NULL);
            continue;
        }
        if (ch == '\n' && *saw_cr) {     /* the LF of a CR LF pair */
            *saw_cr = false;
            continue;
        }
        *saw_cr = ch == '\r';
        if (ch == '\r' || ch == '\n') {
            buf[over ? 0 : len] = 0;
            return write_all(fd, "\r\n", 2) ? -EIO : over ? LINE_LONG : LINE_OK;
        }
        if (ch == '\t')
            ch = ' ';
        if (ch == 0x04 && len == 0)
            return LINE_EOF;
        if (ch == 0x03) {                /* Ctrl-C: drop the line */
            buf[0] = 0;
            over = false;
            return write_all(fd, "^C\r\n", 4) ? -EIO : LINE_OK;
        }
        if ((ch == 0x7f || ch == 0x08) && len) {
            len--;
            if (echo && write_all(fd, "\b \b", 3))
                return -EIO;
        } else if (ch == 0x15) {
            over = false;
            for (; len; len--)
                if (echo && write_all(fd, "\b \b", 3))
                    return -EIO;
        } else if (ch >= 0x20 && ch != 0x7f && len + 1 < cap) {
            buf[len++] = (char)ch;
            if (echo && write_all(fd, (char *)&ch, 1))
                return -EIO;
        } else if (ch >= 0x20 && ch != 0x7f && !over) {   /* full: the bell, once */
            over = true;
            if (echo && write_all(fd, "\a", 1))
                return -EIO;
        }
    }
}

struct login_policy {
    char hash[CONFIG_VALUE_MAX + 1];
    uint32_t max_failures;
};

static void login_policy_read(struct console_server *s, struct login_policy *p)
{
    const struct config_console *cc = &s->cfg;
    struct bora_config *cfg = NULL;
    struct bora_err err;
    if (s->c->ops && s->c->ops->config_read && (cfg = malloc(sizeof *cfg)) &&
        s->c->ops->config_read(s->c->ops->ctx, cfg, &err) == 0)
        cc = &cfg->console;
    snprintf(p->hash, sizeof p->hash, "%s", cc->password_hash);
    p->max_failures = cc->max_login_failures ? cc->max_login_failures : 1;
    free(cfg);
}

static uint64_t now_s(void)
{
    return metrics_now_ns() / 1000000000ull;
}

/* The password prompt, until a login succeeds. Returns 1 logged in, 0 stop, -errno. */
static int serial_login(struct console_server *s, FILE *out, uint32_t *failures, uint64_t *locked_until,
                        bool *saw_cr)
{
    char pw[CONSOLE_PASSWORD_MAX + 1];
    for (;;) {
        fprintf(out, "\nbora console\nPassword: ");
        fflush(out);
        int r = serial_line(s, pw, sizeof pw, false, saw_cr);
        if (r < 0 || (r == LINE_EOF && stopping(s)))
            return r;
        if (r == LINE_EOF || (r == LINE_OK && !pw[0]))   /* nothing typed (Enter on a blank screen): prompt again */
            continue;
        struct login_policy pol;
        login_policy_read(s, &pol);
        uint64_t now = now_s();
        /* longer than any password bora passwd makes: a failed attempt like any wrong one */
        bool ok_pw = r == LINE_OK && pol.hash[0] && crypto_pwhash_str_verify(pol.hash, pw, strlen(pw)) == 0;
        sodium_memzero(pw, sizeof pw);
        if (now < *locked_until) {
            fprintf(out, "Login locked: too many failed attempts; try again in %llu s\n",
                    (unsigned long long)(*locked_until - now));
        } else if (!pol.hash[0]) {
            fprintf(out, "Login refused: no operator password is set "
                    "(console.password_hash; make one with 'bora passwd')\n");
        } else if (ok_pw) {
            *failures = 0;
            fprintf(out, "Logged in. Type 'help' for commands, 'quit' to log out.\n");
            return 1;
        } else if (++*failures >= pol.max_failures) {
            *locked_until = now + CONSOLE_LOCKOUT_S;
            *failures = 0;
            fprintf(out, "Login incorrect.\nLogin locked: too many failed attempts; try again in %d s\n",
                    CONSOLE_LOCKOUT_S);
        } else {
            fprintf(out, "Login incorrect.\n");
        }
    }
}

/* A logged-in session: prompt, command, answer, until quit, Ctrl-D or stop. */
static int serial_session(struct console_server *s, FILE *out, bool *saw_cr)
{
    char line[CONSOLE_LINE_MAX];
    for (;;) {
        fprintf(out, "bora> ");
        fflush(out);
        int r = serial_line(s, line, sizeof line, true, saw_cr);
        if (r <= 0)
            return r;
        if (r == LINE_LONG) {   /* as the socket answers it */
            fprintf(out, "error: command line too long\n");
            continue;
        }
        int rc = console_exec_line(s->c, line, false, out);
        if (rc == CONSOLE_WATCH)
            console_watch(s->c, s->serial_fd, out, false, &s->stop);
        if (rc == CONSOLE_QUIT)
            return 1;
        fflush(out);
    }
}

static void *serial_main(void *p)
{
    struct console_server *s = p;
    cookie_io_functions_t io = { .write = crlf_write };
    FILE *out = fopencookie(&s->serial_fd, "w", io);
    if (!out)
        return NULL;
    uint32_t failures = 0;
    uint64_t locked_until = 0;
    bool saw_cr = false;
    while (!stopping(s)) {
        int r = serial_login(s, out, &failures, &locked_until, &saw_cr);
        if (r < 0) {                     /* the line failed: do not spin on it */
            struct timespec ts = { 0, CONSOLE_POLL_MS * 1000000L };
            nanosleep(&ts, NULL);
        }
        if (r <= 0)
            continue;
        serial_session(s, out, &saw_cr);
        fprintf(out, "Logged out.\n");
        fflush(out);
    }
    fclose(out);
    return NULL;
}

/* ---- start / stop ---- */

int console_server_start(struct console_server **out, struct console *c,
                         const struct config_console *cfg, struct bora_err *err)
{
    struct console_server *s = calloc(1, sizeof *s);
    int rc;
    if (!s)
        return bora_errf(err, -ENOMEM, "console: out of memory");
    s->c = c;
    s->cfg = *cfg;
    s->listen_fd = s->serial_fd = -1;
    pthread_mutex_init(&s->lock, NULL);
    for (int i = 0; i < CONSOLE_CLIENTS_MAX; i++)
        s->client[i].fd = -1;
    if (sodium_init() < 0) {
        rc = bora_errf(err, -EIO, "console: libsodium failed to initialise");
        goto err;
    }
    if (cfg->socket[0] && (rc = socket_open(s, err)))
        goto err;
    if (cfg->serial[0] && (rc = serial_open(s, err)))
        goto err;
    if (s->listen_fd >= 0) {
        if ((rc = -pthread_create(&s->listener, NULL, socket_listener, s))) {
            bora_errf(err, rc, "console: cannot start the socket thread");
            goto err;
        }
        s->have_listener = true;
    }
    if (s->serial_fd >= 0) {
        if ((rc = -pthread_create(&s->serial, NULL, serial_main, s))) {
            bora_errf(err, rc, "console: cannot start the serial thread");
            goto err;
        }
        s->have_serial = true;
    }
    *out = s;
    return 0;
err:
    console_server_stop(s);
    return rc;
}

void console_server_stop(struct console_server *s)
{
    if (!s)
        return;
    atomic_store_explicit(&s->stop, true, memory_order_release);   /* partner: stopping() */
    if (s->have_listener)
        pthread_join(s->listener, NULL);
    for (int i = 0; i < CONSOLE_CLIENTS_MAX; i++) {
        pthread_mutex_lock(&s->lock);
        bool busy = s->client[i].fd >= 0 || s->client[i].done;
        if (s->client[i].fd >= 0)
            shutdown(s->client[i].fd, SHUT_RDWR);   /* a session blocked writing to a client that
                                                     * stopped reading returns at once */
        pthread_mutex_unlock(&s->lock);
        if (busy)
            pthread_join(s->client[i].thread, NULL);   /* sessions poll the stop flag */
    }
    if (s->have_serial)
        pthread_join(s->serial, NULL);
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        unlink(s->socket_path);
    }
    if (s->serial_fd >= 0)
        close(s->serial_fd);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
