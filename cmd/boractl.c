/* boractl.c — the operator console client: sends commands to borad's console socket.
 * One-shot (`boractl stats`), interactive with line editing and history (libedit), and the
 * forced command of the SSH `operator` account (runs $SSH_ORIGINAL_COMMAND when set).
 * Exit status: 0 ok, 1 the command failed or borad is unreachable, 2 usage. */
#include <editline/readline.h>
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <jansson.h>

#include "console/console.h"
#include "console/console_server.h"

#define BORACTL_DEFAULT_SOCKET "/run/bora/console.sock"
#define BORACTL_HISTORY        ".boractl_history"
#define BORACTL_HISTORY_LINES  500

struct boractl_args {
    const char *socket;
    bool json;
    int first_cmd;          /* index of the first command word in argv; argc if none */
};

static void usage(FILE *f)
{
    fprintf(f, "usage: boractl [--socket PATH] [--json] [COMMAND [ARGS...]]\n"
               "  --socket PATH   borad's console socket (default $BORA_CONSOLE_SOCKET or %s)\n"
               "  --json          machine-readable answers\n"
               "Without COMMAND, reads commands interactively (line editing, history in ~/%s).\n"
               "Under SSH's forced command, $SSH_ORIGINAL_COMMAND is the command. 'help' lists them.\n",
            BORACTL_DEFAULT_SOCKET, BORACTL_HISTORY);
}

static int args_parse(int argc, char **argv, struct boractl_args *a)
{
    const char *env = getenv("BORA_CONSOLE_SOCKET");
    a->socket = env && *env ? env : BORACTL_DEFAULT_SOCKET;
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && (argv[i][1] == '-' || !strcmp(argv[i], "-h")); i++) {
        if (!strcmp(argv[i], "--socket")) {
            if (i + 1 >= argc || !argv[i + 1][0]) {
                fprintf(stderr, "boractl: --socket needs a path (try 'boractl --help')\n");
                return 2;
            }
            a->socket = argv[++i];
        } else if (!strcmp(argv[i], "--json")) {
            a->json = true;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "boractl: unknown option '%s' (try 'boractl --help')\n", argv[i]);
            return 2;
        }
    }
    a->first_cmd = i;
    return 0;
}

/* --json (option, or first or last word of the command): a failure to connect answers as the
 * console would, {"ok": false, "error": ...} on stdout, besides the message on stderr */
static bool json_asked(bool opt, const char *line)
{
    line += strspn(line, " \t");   /* the server splits on blanks: "  --json cancel 9" is JSON too */
    size_t n = strlen(line);
    return opt || !strncmp(line, "--json", 6) || (n >= 7 && !strcmp(line + n - 7, " --json"));
}

/* {"ok": false, "error": msg} on stdout, as the console answers a failed command under --json */
static void json_error_out(const char *msg)
{
    json_t *o = json_pack("{s:b,s:s?}", "ok", 0, "error", msg);   /* s?: text not UTF-8 gives null */
    if (!o)
        o = json_pack("{s:b,s:n}", "ok", 0, "error");
    if (o) {
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(o);
    }
    fflush(stdout);
}

/* The text of a plain answer as one line for json_error_out: "error: " and the end's blanks off. */
static void json_error_text(char *t)
{
    size_t n = strlen(t);
    while (n && (t[n - 1] == '\n' || t[n - 1] == ' '))
        t[--n] = 0;
    if (!strncmp(t, "error: ", 7))
        memmove(t, t + 7, n - 6);
    json_error_out(t);
}

static int connect_console(const char *path, bool json)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof a.sun_path) {
        fprintf(stderr, "boractl: socket path '%s' is too long\n", path);
        return -1;
    }
    strcpy(a.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) {
        char msg[600];
        snprintf(msg, sizeof msg, "cannot connect to '%s': %s (is borad running with [console] socket = %s?)", path,
                 strerror(errno), path);
        fprintf(stderr, "boractl: %s\n", msg);
        if (json)
            json_error_out(msg);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w, n -= (size_t)w;
    }
    return 0;
}

/* Terminal in raw-ish mode while `stats watch` runs, so any key ends it. */
static bool tty_raw(struct termios *saved)
{
    if (!isatty(0) || tcgetattr(0, saved))
        return false;
    struct termios t = *saved;
    t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    return tcsetattr(0, TCSANOW, &t) == 0;
}

/* Copies the answer until the end marker: a `stats watch` to stdout as it comes; any other
 * answer is held until its status is known, then goes to stdout (success) or stderr (an error,
 * so scripts that read stdout see only data). With json, an error that is not already a JSON
 * answer (the session's own: a line too long, too many sessions, the idle close; or borad
 * hanging up) is also put on stdout as {"ok": false, "error": ...}. While watching, a key (or
 * the end of stdin) on fd 0 tells the server to stop. Returns the console_rc, or -1 if borad
 * hung up. */
static int answer_read(int fd, bool watch, bool json)
{
    char buf[4096];
    bool stdin_open = watch;
    int rc = 0;
    bool in_rc = false;
    char *held = NULL;
    size_t held_len = 0;
    FILE *hold = watch ? NULL : open_memstream(&held, &held_len);
    FILE *text_out = hold ? hold : stdout;
    struct termios saved;
    bool raw = watch && tty_raw(&saved);
    for (;;) {
        struct pollfd p[2] = { { .fd = fd, .events = POLLIN }, { .fd = 0, .events = POLLIN } };
        if (poll(p, stdin_open ? 2 : 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            rc = -1;
            break;
        }
        if (stdin_open && p[1].revents) {
            /* a key on a terminal is taken; from a pipe or a file the next line ends the watch and
             * stays for line_next (stdin unbuffered there: interactive) */
            if (isatty(0)) {
                ssize_t n = read(0, buf, sizeof buf);
                (void)n;
            }
            stdin_open = false;
            if (send_all(fd, "\n", 1)) {
                rc = -1;
                break;
            }
        }
        if (!p[0].revents)
            continue;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
            rc = -1;
            break;
        }
        ssize_t i = 0;
        if (!in_rc) {
            char *end = memchr(buf, CONSOLE_END_BYTE, (size_t)n);
            size_t text = end ? (size_t)(end - buf) : (size_t)n;
            fwrite(buf, 1, text, text_out);
            if (!end)
                continue;
            in_rc = true;
            i = (ssize_t)text + 1;
        }
        for (; i < n && buf[i] != '\n'; i++)
            rc = rc * 10 + (buf[i] - '0');
        if (i < n)
            break;
    }
    if (raw)
        tcsetattr(0, TCSANOW, &saved);
    bool json_said = false;   /* an error answer already in JSON, or one json_error_out gave */
    if (hold) {
        fclose(hold);
        fwrite(held, 1, held_len, rc == 0 ? stdout : stderr);
        if (json && rc != 0 && held && held[strspn(held, " \t\r\n")] == '{') {
            fwrite(held, 1, held_len, stdout);   /* the console's own JSON error: for stdout's readers too */
            json_said = true;
        } else if (json && rc != 0 && held && held[strspn(held, " \t\r\n")]) {
            json_error_text(held);
            json_said = true;
        }
        free(held);
    }
    fflush(stdout);
    if (rc < 0) {
        fprintf(stderr, "boractl: borad closed the console connection\n");
        if (json && !json_said)
            json_error_out("borad closed the console connection");
    }
    return rc;
}

/* Sends one command line; returns the console_rc or -1. */
static int command_run(int fd, const char *line, bool json)
{
    char buf[CONSOLE_LINE_MAX + 16];
    int n = snprintf(buf, sizeof buf, "%s%s\n", json ? "--json " : "", line);
    if (n < 0 || (size_t)n >= sizeof buf) {
        fprintf(stderr, "boractl: command line too long\n");
        if (json_asked(json, line))
            json_error_out("command line too long");
        return CONSOLE_USAGE;
    }
    if (strchr(line, '\n')) {
        fprintf(stderr, "boractl: a command is one line\n");
        if (json_asked(json, line))
            json_error_out("a command is one line");
        return CONSOLE_USAGE;
    }
    if (send_all(fd, buf, (size_t)n)) {
        /* what borad said before it closed (e.g. the idle timeout), if it is still unread */
        char said[512];
        ssize_t k = recv(fd, said, sizeof said - 1, MSG_DONTWAIT);
        if (k > 0) {
            said[k] = 0;   /* the text ends at the end marker (CONSOLE_END_BYTE is NUL) */
            fprintf(stderr, "%s%s", said, said[0] && said[strlen(said) - 1] != '\n' ? "\n" : "");
        }
        fprintf(stderr, "boractl: borad closed the console connection\n");
        if (json_asked(json, line)) {
            if (k > 0 && said[0])
                json_error_text(said);
            else
                json_error_out("borad closed the console connection");
        }
        return -1;
    }
    char copy[CONSOLE_LINE_MAX];
    char *argv[CONSOLE_ARGS_MAX];
    snprintf(copy, sizeof copy, "%s", line);
    int argc = console_split(copy, argv, CONSOLE_ARGS_MAX);
    /* --json may be the first or the last word (console.h): skip it to recognise the watch */
    const int a0 = argc > 0 && !strcmp(argv[0], "--json");
    const int an = argc - a0 - (argc - a0 > 0 && !strcmp(argv[argc - 1], "--json"));
    bool watch = an == 2 && !strcmp(argv[a0], "stats") && !strcmp(argv[a0 + 1], "watch");
    return answer_read(fd, watch, json_asked(json, line));
}

static int exit_status(int rc)
{
    return rc == CONSOLE_OK || rc == CONSOLE_QUIT ? 0 : rc == CONSOLE_USAGE ? 2 : 1;
}

static void history_path(char *buf, size_t n)
{
    const char *home = getenv("HOME");
    buf[0] = 0;
    if (home && *home)
        snprintf(buf, n, "%s/%s", home, BORACTL_HISTORY);
}

/* The next command line (malloc'd), from libedit on a terminal or stdin otherwise; NULL at EOF.
 * *nul: the piped line held a NUL byte (it would have been cut short there). */
static char *line_next(bool tty, bool *nul)
{
    *nul = false;
    if (tty)
        return readline("bora> ");
    char *buf = NULL;   /* the whole line, however long: command_run refuses one over the limit */
    size_t cap = 0;
    ssize_t n = getline(&buf, &cap, stdin);
    if (n < 0) {
        free(buf);
        return NULL;
    }
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    *nul = memchr(buf, 0, (size_t)n) != NULL;
    buf[n] = 0;
    return buf;
}

static int interactive(int fd, bool json)
{
    char hist[4096];
    bool tty = isatty(0);
    if (!tty)   /* no read-ahead: a `stats watch` sees the next line arrive (answer_read) */
        setvbuf(stdin, NULL, _IONBF, 0);
    history_path(hist, sizeof hist);
    if (tty) {
        using_history();
        stifle_history(BORACTL_HISTORY_LINES);
        if (hist[0])
            read_history(hist);
        printf("bora console; 'help' lists the commands, 'quit' ends.\n");
    }
    int rc = 0, worst = 0;   /* commands from a pipe: the worst status of any (scripts see failures) */
    char *line;
    bool nul;
    while ((line = line_next(tty, &nul))) {
        if (tty && line[strspn(line, " \t")])
            add_history(line);
        if (nul) {   /* not sent: the part before the NUL would run as if it were the command */
            fprintf(stderr, "boractl: a command line holds a NUL byte: not sent\n");
            if (json_asked(json, line))   /* the part before the NUL names --json as well as any */
                json_error_out("a command line holds a NUL byte: not sent");
            rc = CONSOLE_USAGE;
        } else {
            rc = line[strspn(line, " \t")] ? command_run(fd, line, json) : 0;
        }
        free(line);
        if (rc < 0 || rc == CONSOLE_QUIT)
            break;
        if (!tty && exit_status(rc) > worst)
            worst = exit_status(rc);
    }
    if (tty && hist[0])
        write_history(hist);
    return rc < 0 ? 1 : worst;
}

int main(int argc, char **argv)
{
    struct boractl_args a = { 0 };
    if (args_parse(argc, argv, &a))
        return 2;
    char line[CONSOLE_LINE_MAX];
    size_t len = 0;
    line[0] = 0;
    for (int i = a.first_cmd; i < argc; i++) {
        /* words with blanks are quoted again so the server splits them the same way, and an empty
         * word too (`config set KEY ""`; `boractl ""` is then a command, not the interactive console) */
        bool quote = !argv[i][0] || strpbrk(argv[i], " \t") != NULL;
        int n = snprintf(line + len, sizeof line - len, "%s%s%s%s", len ? " " : "", quote ? "\"" : "",
                         argv[i], quote ? "\"" : "");
        if (n < 0 || (size_t)n >= sizeof line - len) {
            fprintf(stderr, "boractl: command line too long\n");
            if (a.json || !strcmp(argv[a.first_cmd], "--json") || !strcmp(argv[argc - 1], "--json"))
                json_error_out("command line too long");
            return 2;
        }
        len += (size_t)n;
    }
    const char *ssh = getenv("SSH_ORIGINAL_COMMAND");
    if (!len && ssh && ssh[strspn(ssh, " \t")] &&    /* ssh operator@host COMMAND */
        (size_t)snprintf(line, sizeof line, "%s", ssh) >= sizeof line) {
        fprintf(stderr, "boractl: command line too long\n");   /* never a shortened command */
        if (a.json || json_asked(false, ssh))   /* (its first word checked; the last, past the limit, not) */
            json_error_out("command line too long");
        return 2;
    }
    int fd = connect_console(a.socket, json_asked(a.json, line));
    if (fd < 0)
        return 1;
    int rc = line[0] ? exit_status(command_run(fd, line, a.json)) : interactive(fd, a.json);
    close(fd);
    return rc;
}
