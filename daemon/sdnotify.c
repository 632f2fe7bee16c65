/*
 * sdnotify.c - the daemon's state for systemd (Type=notify): READY=1
 * once it serves, RELOADING=1 / READY=1 around a reload, STOPPING=1 at
 * SIGTERM.  Owns the one datagram socket to $NOTIFY_SOCKET, connected at
 * start while the daemon may still reach any path (before it drops to
 * its user), so every later state is one send(2) the sandbox allows.
 *
 * The protocol is one datagram of "KEY=VALUE" lines (sd_notify(3));
 * written here rather than linking libsystemd, whose dependencies
 * (compression and crypto libraries) would all load into a daemon that
 * parses mail from the Internet for the sake of four strings.
 */
#include <sys/socket.h>
#include <sys/un.h>
#include <stddef.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/log.h"
#include "sdnotify.h"

static int	notify_fd = -1;

/* sdnotify_open - connect to $NOTIFY_SOCKET if systemd set it; the
 * variable is removed so that nothing the daemon starts sees it */
void
sdnotify_open(void)
{
	struct sockaddr_un sun;
	const char *path = getenv("NOTIFY_SOCKET");
	socklen_t len;
	size_t n;

	if (path == NULL || path[0] == '\0')
		return;
	n = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || n >= sizeof(sun.sun_path)) {
		log_warnx("sdnotify: NOTIFY_SOCKET %s: not a socket path",
		    path);
		goto done;
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, n);
	if (path[0] == '@')		/* the abstract namespace */
		sun.sun_path[0] = '\0';
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
	    (path[0] == '@' ? 0 : 1));
	if ((notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) ==
	    -1 || connect(notify_fd, (struct sockaddr *)&sun, len) == -1) {
		log_warn("sdnotify: %s", path);
		if (notify_fd != -1)
			close(notify_fd);
		notify_fd = -1;
	}
done:
	unsetenv("NOTIFY_SOCKET");
}

/* sdnotify - tell systemd state (lines "KEY=VALUE"); nothing without it */
void
sdnotify(const char *state)
{
	if (notify_fd == -1)
		return;
	if (send(notify_fd, state, strlen(state), MSG_NOSIGNAL) == -1)
		log_debug("sdnotify: %s", strerror(errno));
}
