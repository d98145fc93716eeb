/* bora_passwd.c — `bora passwd`: makes the operator password hash for [console]
 * password_hash (libsodium crypto_pwhash_str, Argon2id), reading the password twice from
 * the terminal without echo, or once from stdin with --stdin. */
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "console/console.h"

#define PASSWD_MIN 8     /* bytes */
#define PASSWD_MAX CONSOLE_PASSWORD_MAX   /* bytes: the serial login takes as many */

/* Reads one line (without its newline) from f; echo off when f is a terminal. 0 or -1. */
static int read_secret(FILE *f, const char *prompt, char *buf, size_t n)
{
    struct termios saved, t;
    int fd = fileno(f);
    int tty = isatty(fd) && tcgetattr(fd, &saved) == 0;
    if (tty) {
        fprintf(stderr, "%s", prompt);
        t = saved;
        t.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(fd, TCSAFLUSH, &t);
    }
    char *r = fgets(buf, (int)n, f);
    if (tty) {
        tcsetattr(fd, TCSAFLUSH, &saved);
        fputc('\n', stderr);
    }
    if (!r)
        return -1;
    buf[strcspn(buf, "\r\n")] = 0;
    return 0;
}

int cmd_passwd(int argc, char **argv)
{
    int from_stdin = argc == 2 && !strcmp(argv[1], "--stdin");
    if (argc > 2 || (argc == 2 && !from_stdin)) {
        fprintf(stderr, "usage: bora passwd [--stdin]\n"
                        "  prints a [console] password_hash line for the operator password\n");
        return 2;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "bora passwd: libsodium failed to initialise\n");
        return 1;
    }
    char pw[PASSWD_MAX + 2], again[PASSWD_MAX + 2], hash[crypto_pwhash_STRBYTES];
    int rc = 1;
    FILE *tty = from_stdin ? NULL : fopen("/dev/tty", "r+");
    FILE *in = tty ? tty : stdin;
    if (read_secret(in, "operator password: ", pw, sizeof pw)) {
        fprintf(stderr, "bora passwd: no password given\n");
        goto out;
    }
    if (strlen(pw) < PASSWD_MIN || strlen(pw) > PASSWD_MAX) {   /* the buffer holds PASSWD_MAX + 1: longer is cut */
        if (strlen(pw) > PASSWD_MAX)
            fprintf(stderr, "bora passwd: the password must be %d..%d bytes (got more than %d)\n", PASSWD_MIN,
                    PASSWD_MAX, PASSWD_MAX);
        else
            fprintf(stderr, "bora passwd: the password must be %d..%d bytes (got %zu)\n", PASSWD_MIN, PASSWD_MAX,
                    strlen(pw));
        goto out;
    }
    if (tty && (read_secret(in, "again: ", again, sizeof again) || strcmp(pw, again))) {
        fprintf(stderr, "bora passwd: the two passwords differ\n");
        goto out;
    }
    if (crypto_pwhash_str(hash, pw, strlen(pw), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE)) {
        fprintf(stderr, "bora passwd: hashing failed (out of memory?)\n");
        goto out;
    }
    printf("password_hash = %s\n", hash);
    fprintf(stderr, "bora passwd: put this line in the [console] section of the config\n");
    rc = 0;
out:
    sodium_memzero(pw, sizeof pw);
    sodium_memzero(again, sizeof again);
    if (tty)
        fclose(tty);
    return rc;
}
