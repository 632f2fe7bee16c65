/*
 * control.c - the control socket mxbridgectl talks to.  The protocol is
 * one request line of words, answered by "OK\n" or "ERR\n" followed by
 * free text, after which the daemon closes the connection.  Commands are
 * registered by the modules that own the data; this file only frames.
 * A command registered with control_register_later() answers when its
 * work is done: the connection waits (struct control_pending is the
 * connection) and is freed only after both its close and its answer.
 *
 * Who may talk to it: the socket is mode 0660, owned by the daemon's
 * user and the "group" of mxbridge.conf(5) (root's group without one),
 * and every connection's peer is checked again (SO_PEERCRED and
 * SO_PEERGROUPS, as the kernel recorded them at connect): root, the
 * daemon's own user, or a member of that group, else "ERR permission
 * denied" and the connection closes.  Requests are one line of at most
 * CONTROL_MAXREQ bytes, printable ASCII words of at most CONTROL_MAXWORD.
 */
#include <sys/socket.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/xmalloc.h"
#include "control.h"

#define CONTROL_MAXREQ	1024
#define CONTROL_MAXCMDS	32
#define CONTROL_MAXWORD	255	/* bytes of one word of a request */
#define CONTROL_MAXGROUPS 256	/* a peer's groups looked at */

struct control_cmd {
	const char	*name;
	control_cmd_fn	 fn;
	control_later_fn later;		/* or this */
};

/* one accepted control connection */
struct control_conn {
	uv_pipe_t	 pipe;
	uv_write_t	 wreq;
	struct buf	 in;
	struct buf	 out;
	int		 answered;
	int		 pending;	/* a later command owes the answer */
	int		 closed;	/* the handle closed meanwhile */
	int		 refused;	/* the peer may not: its request is
					   read (the client is not cut off
					   while writing it), then refused */
};

/* struct control_pending is a struct control_conn waiting for its answer */

static uv_pipe_t		 control_listener;
static int			 control_listening;
static char			*control_path;
static long			 control_gid = -1;	/* may connect, or -1 */
static struct control_cmd	 control_cmds[CONTROL_MAXCMDS];
static size_t			 control_ncmds;
static control_stats_fn		 control_stats[CONTROL_MAXCMDS];
static size_t			 control_nstats;

int
control_answer_parse(const char *data, size_t len, size_t *body)
{
	if (memchr(data, '\0', len) != NULL)
		return -1;
	if (len >= 3 && memcmp(data, "OK\n", 3) == 0) {
		*body = 3;
		return 0;
	}
	if (len >= 4 && memcmp(data, "ERR\n", 4) == 0) {
		*body = 4;
		return 1;
	}
	return -1;
}

void
control_register(const char *name, control_cmd_fn fn)
{
	if (control_ncmds == CONTROL_MAXCMDS)
		fatalx("control_register: too many commands");
	control_cmds[control_ncmds].name = name;
	control_cmds[control_ncmds++].fn = fn;
}

void
control_register_later(const char *name, control_later_fn fn)
{
	if (control_ncmds == CONTROL_MAXCMDS)
		fatalx("control_register_later: too many commands");
	control_cmds[control_ncmds].name = name;
	control_cmds[control_ncmds++].later = fn;
}

void
control_register_stats(control_stats_fn fn)
{
	if (control_nstats == CONTROL_MAXCMDS)
		fatalx("control_register_stats: too many");
	control_stats[control_nstats++] = fn;
}

/* control_stats_collect - every module's counters, one key=value per
 * line: what "stats" answers, and what the metrics endpoint exposes */
void
control_stats_collect(struct buf *out)
{
	size_t i;

	for (i = 0; i < control_nstats; i++)
		control_stats[i](out);
}

static int
control_cmd_stats(int argc, char **argv, struct buf *out)
{
	control_stats_collect(out);
	return 0;
}

static void
control_close_cb(uv_handle_t *h)
{
	struct control_conn *c = h->data;

	if (c->pending) {
		c->closed = 1;	/* freed when the answer comes */
		return;
	}
	buf_free(&c->in);
	buf_free(&c->out);
	free(c);
}

static void
control_write_cb(uv_write_t *req, int status)
{
	struct control_conn *c = req->data;

	uv_close((uv_handle_t *)&c->pipe, control_close_cb);
}

static void	control_reply(struct control_conn *);

/* control_word_ok - a word of a request: printable ASCII, bounded */
static int
control_word_ok(const char *w)
{
	size_t n;

	for (n = 0; w[n] != '\0'; n++)
		if (n >= CONTROL_MAXWORD || w[n] < 0x21 || w[n] > 0x7e)
			return 0;
	return 1;
}

/*
 * control_peer_ok - the peer may use the socket: root, the daemon's own
 * user, or one whose primary or supplementary groups (as the kernel
 * recorded them at connect) include control_gid.  Logs a refusal.
 */
static int
control_peer_ok(uv_pipe_t *pipe)
{
	struct ucred cred;
	gid_t groups[CONTROL_MAXGROUPS];
	socklen_t len = sizeof(cred);
	uv_os_fd_t fd;
	size_t i, n;

	if (uv_fileno((uv_handle_t *)pipe, &fd) != 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1) {
		log_warn("control: peer credentials");
		return 0;
	}
	if (cred.uid == 0 || cred.uid == geteuid())
		return 1;
	if (control_gid >= 0) {
		if (cred.gid == (gid_t)control_gid)
			return 1;
		len = sizeof(groups);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups,
		    &len) == 0) {
			n = len / sizeof(groups[0]);
			for (i = 0; i < n; i++)
				if (groups[i] == (gid_t)control_gid)
					return 1;
		}
	}
	log_warnx("control: refused peer uid=%ld gid=%ld pid=%ld: not root "
	    "and not in the control group", (long)cred.uid, (long)cred.gid,
	    (long)cred.pid);
	return 0;
}

/* control_dispatch - split the request into words and run its command;
 * 1 when a later command will answer */
static int
control_dispatch(struct control_conn *c, char *line)
{
	char *argv[CONTROL_MAXARGS + 1], *save = NULL, *w;
	struct buf body;
	int argc = 0, rc = -1;
	size_t i;

	buf_init(&body);
	for (w = strtok_r(line, " \t", &save); w != NULL && argc < CONTROL_MAXARGS;
	    w = strtok_r(NULL, " \t", &save))
		argv[argc++] = w;
	argv[argc] = NULL;
	if (argc == 0)
		buf_puts(&body, "empty request\n");
	for (i = 0; i < (size_t)argc; i++) {
		if (!control_word_ok(argv[i])) {
			buf_puts(&body, "bad request: a word is too long or "
			    "not printable ASCII\n");
			log_warnx("control: bad request refused (word %zu "
			    "too long or not printable ASCII)", i + 1);
			argc = 0;
			break;
		}
	}
	for (i = 0; argc > 0 && i < control_ncmds; i++) {
		if (strcmp(argv[0], control_cmds[i].name) != 0)
			continue;
		if (control_cmds[i].later != NULL) {
			buf_free(&body);
			log_debug("control: command=%s later", argv[0]);
			c->pending = 1;
			uv_read_stop((uv_stream_t *)&c->pipe);
			control_cmds[i].later(argc, argv,
			    (struct control_pending *)c);
			return 1;
		}
		rc = control_cmds[i].fn(argc, argv, &body);
		break;
	}
	if (argc > 0 && i == control_ncmds)
		buf_printf(&body, "unknown command: %s\n", argv[0]);
	buf_puts(&c->out, rc == 0 ? "OK\n" : "ERR\n");
	if (body.len)
		buf_append(&c->out, body.data, body.len);
	buf_free(&body);
	log_debug("control: command=%s rc=%d", argc ? argv[0] : "", rc);
	return 0;
}

/* control_pending_done - the later command's answer: rc 0 or -1, text */
void
control_pending_done(struct control_pending *p, int rc, const char *text)
{
	struct control_conn *c = (struct control_conn *)p;

	c->pending = 0;
	if (c->closed) {
		buf_free(&c->in);
		buf_free(&c->out);
		free(c);
		return;
	}
	buf_puts(&c->out, rc == 0 ? "OK\n" : "ERR\n");
	buf_puts(&c->out, text);
	control_reply(c);
}

static void
control_reply(struct control_conn *c)
{
	uv_buf_t ub = uv_buf_init(c->out.data, (unsigned)c->out.len);

	c->answered = 1;
	uv_read_stop((uv_stream_t *)&c->pipe);
	c->wreq.data = c;
	if (uv_write(&c->wreq, (uv_stream_t *)&c->pipe, &ub, 1,
	    control_write_cb) != 0)
		uv_close((uv_handle_t *)&c->pipe, control_close_cb);
}

static void
control_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *ub)
{
	struct control_conn *c = h->data;

	buf_reserve(&c->in, 512);
	ub->base = c->in.data + c->in.len;
	ub->len = c->in.cap - c->in.len - 1;
}

static void
control_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *ub)
{
	struct control_conn *c = s->data;
	char *nl;

	if (n < 0) {
		uv_close((uv_handle_t *)s, control_close_cb);
		return;
	}
	c->in.len += (size_t)n;
	c->in.data[c->in.len] = '\0';
	if ((nl = memchr(c->in.data, '\n', c->in.len)) == NULL) {
		if (c->in.len > CONTROL_MAXREQ) {
			buf_puts(&c->out, "ERR\nrequest too long\n");
			control_reply(c);
		}
		return;
	}
	*nl = '\0';
	if (nl > c->in.data && nl[-1] == '\r')
		nl[-1] = '\0';
	if (c->refused) {
		buf_puts(&c->out, "ERR\npermission denied\n");
		control_reply(c);
		return;
	}
	if (control_dispatch(c, c->in.data) == 0)
		control_reply(c);
}

static void
control_accept_cb(uv_stream_t *server, int status)
{
	struct control_conn *c;

	if (status < 0) {
		log_warnx("control: accept: %s", uv_strerror(status));
		return;
	}
	c = xcalloc(1, sizeof(*c));
	uv_pipe_init(server->loop, &c->pipe, 0);
	c->pipe.data = c;
	if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
		uv_close((uv_handle_t *)&c->pipe, control_close_cb);
		return;
	}
	c->refused = !control_peer_ok(&c->pipe);
	if (uv_read_start((uv_stream_t *)&c->pipe, control_alloc_cb,
	    control_read_cb) != 0)
		uv_close((uv_handle_t *)&c->pipe, control_close_cb);
}

int
control_start(uv_loop_t *loop, const char *path, long gid)
{
	struct stat st;
	mode_t old;
	int rc;

	control_register("stats", control_cmd_stats);
	if (unlink(path) == -1 && errno != ENOENT) {
		log_warn("control: unlink %s", path);
		return -1;
	}
	uv_pipe_init(loop, &control_listener, 0);
	old = umask(0117);
	rc = uv_pipe_bind(&control_listener, path);
	umask(old);
	/* 0660 whatever the umask was; the group's, when one is named (no
	 * chown when it already is: under the systemd unit, Group= makes it
	 * so, and chown is outside the unit's system call filter) */
	if (rc == 0 && (chmod(path, 0660) == -1 || (gid >= 0 &&
	    (stat(path, &st) == -1 || (st.st_gid != (gid_t)gid &&
	    chown(path, (uid_t)-1, (gid_t)gid) == -1)))))
		rc = uv_translate_sys_error(errno);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&control_listener, 16,
		    control_accept_cb);
	if (rc != 0) {
		log_warnx("control: %s: %s", path, uv_strerror(rc));
		uv_close((uv_handle_t *)&control_listener, NULL);
		return -1;
	}
	control_path = xstrdup(path);
	control_gid = gid;
	control_listening = 1;
	return 0;
}

void
control_stop(void)
{
	if (!control_listening)
		return;
	uv_close((uv_handle_t *)&control_listener, NULL);
	unlink(control_path);
	free(control_path);
	control_path = NULL;
	control_listening = 0;
}
