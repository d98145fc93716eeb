/* console_server.h — the console's ways in, run as threads of borad: a UNIX socket that
 * boractl (and SSH's forced command) talks to, and a serial line with a password login. */
#ifndef BORA_CONSOLE_CONSOLE_SERVER_H
#define BORA_CONSOLE_CONSOLE_SERVER_H

#include "common/err.h"
#include "config/config.h"
#include "console/console.h"

#define CONSOLE_CLIENTS_MAX   8      /* socket sessions at once */
#define CONSOLE_LOCKOUT_S     300    /* serial lockout after max_login_failures failures */
#define CONSOLE_POLL_MS       200    /* how often idle console threads look at the stop flag */
#define CONSOLE_SEND_TIMEOUT_S 10    /* a socket session whose client reads nothing this long ends */

/* Socket protocol (one session per connection, any number of commands):
 *   client → server: one command line, '\n'-terminated (words as console_split reads them;
 *                    a leading "--json" asks for JSON).
 *   server → client: the answer, then a NUL byte, the console_rc in decimal and '\n'.
 *   `stats watch` streams until the client sends any byte, then ends the same way. */
#define CONSOLE_END_BYTE '\0'

struct console_server;

/* Starts the ways in that cfg names (socket if cfg->socket is set, serial if cfg->serial is
 * set): binds the socket (mode, owner, group applied; a stale socket file is replaced, a live
 * one is -EADDRINUSE), opens and configures the serial line, then starts one thread each.
 * c must outlive the server; cfg is copied (a live `config set` may rewrite the caller's while
 * sessions run). c->ops->config_read (if any) gives the serial login its current password hash
 * and failure limit, else the copy's are used. Call from one thread.
 * `stats watch` writes a session through stdio: the process must ignore SIGPIPE (borad does),
 * or a session closed during it ends the process. The other writes use MSG_NOSIGNAL.
 * Returns 0 with *out set, or -errno with a message naming the path in err. */
int console_server_start(struct console_server **out, struct console *c,
                         const struct config_console *cfg, struct bora_err *err);

/* What console_server_start would refuse in cfg without touching anything (for
 * `borad --check-config`): a socket owner or group that does not resolve, a socket path taken by
 * something else, a serial device that is missing, not a character device or not a terminal.
 * Calls report once for every problem, with the key's name ("console.serial") and a message
 * naming the key and the value. Returns how many problems there were (0: none). */
int console_server_check(const struct config_console *cfg,
                         void (*report)(void *ctx, const char *key, const char *msg), void *ctx);

/* Stops every console thread (ends sessions, joins), removes the socket file, frees s.
 * Call from the thread that started it; s may be NULL. */
void console_server_stop(struct console_server *s);

#endif
