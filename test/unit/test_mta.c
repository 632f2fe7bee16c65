/*
 * test_mta.c - unit tests of mta/: the envelope format (round trip, torn
 * headers), the spool (durable commit, group commit, crash recovery,
 * corrupt files, the free-space floor, recycled files, a failing
 * directory fsync), DSNs (structure, RET, NOTIFY, null sender to dead/),
 * DNS failures (SERVFAIL, timeout, the cap on lookups at once), and
 * delivery end to end through the real SMTP client against a scripted
 * SMTP server on loopback (connection reuse too), all on a real libuv
 * loop through the API the proxy uses (mta_msg_*).
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "../../common/buf.h"
#include "../../common/hash.h"
#include "../../common/log.h"
#include "../../common/xmalloc.h"
#include "../../mta/mta_local.h"
#include "../../policy/policy.h"

#define UNUSED	__attribute__((unused))

/*
 * The scripted SMTP server: RCPT addresses containing "reject" get 550,
 * "defer" 450; defer_all defers every RCPT; down answers 421; one_msg
 * closes the connection after each message; no_ehlo refuses EHLO (an
 * old server: the client has to say HELO).
 */
struct sink {
	uv_tcp_t	 listener;
	uint16_t	 port;
	int		 pipelining;
	int		 dsn;
	int		 down;
	int		 defer_all;
	int		 one_msg;
	int		 no_ehlo;
	int		 hold;		/* no banner until sink_release() */
	struct sink_conn *held;
	int		 msgs;
	int		 piped;		/* MAILs that came with a dot */
	int		 conns;
	struct buf	 last;		/* the last message's data */
	struct buf	 all;		/* every message, "=====\n" between */
	struct buf	 cmds;		/* every command line */
};

struct sink_conn {
	uv_tcp_t	 tcp;
	struct sink	*s;
	struct buf	 in;
	struct buf	 msg;
	int		 data;
	int		 nok;
	int		 quit;
	int		 dot;		/* a dot in this read */
	struct sink_conn *next, **prevp;	/* on sink_conns */
};

/* the sink's open connections, closed (and freed) at teardown */
static struct sink_conn	*sink_conns;

static uv_loop_t	*loop;
static struct sink	 sink;
static char		 dir[64];
static char		 committed[64];
static int		 commit_status;
static int		 commit_ok, commit_fail;
static enum policy_route rcpt_route;	/* of queue_msg's recipients */
static const char	*hold_reason;	/* queue_msg holds it (ingress) */

/*
 * Fault injection: these replace the C library's for the whole test
 * program, spool.c included.  fail_dirsync = n fails the n-th directory
 * fsync from now; fail_datasync = n the n-th fdatasync.
 */
static int		 fail_dirsync, fail_datasync;

int
fsync(int fd)
{
	struct stat st;

	if (fail_dirsync > 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) &&
	    --fail_dirsync == 0) {
		errno = EIO;
		return -1;
	}
	return (int)syscall(SYS_fsync, fd);
}

int
fdatasync(int fd)
{
	if (fail_datasync > 0 && --fail_datasync == 0) {
		errno = EIO;
		return -1;
	}
	return (int)syscall(SYS_fdatasync, fd);
}

static void
sink_close_cb(uv_handle_t *h)
{
	struct sink_conn *c = h->data;

	if ((*c->prevp = c->next) != NULL)
		c->next->prevp = c->prevp;
	buf_free(&c->in);
	buf_free(&c->msg);
	free(c);
}

static void
sink_write_cb(uv_write_t *req, int status)
{
	struct sink_conn *c = req->handle->data;

	if (c->quit && !uv_is_closing((uv_handle_t *)&c->tcp))
		uv_close((uv_handle_t *)&c->tcp, sink_close_cb);
	free(req);
}

static void
sink_say(struct sink_conn *c, const char *text)
{
	struct {
		uv_write_t	 req;
		char		 data[512];
	} *w;
	uv_buf_t b;

	w = malloc(sizeof(*w));
	snprintf(w->data, sizeof(w->data), "%s", text);
	b = uv_buf_init(w->data, strlen(w->data));
	if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1,
	    sink_write_cb) != 0)
		free(w);
}

/* sink_line - one line from the client, CRLF stripped */
static void
sink_line(struct sink_conn *c, const char *l, size_t n)
{
	struct sink *s = c->s;
	char line[1024];

	if (c->data) {
		if (n == 1 && l[0] == '.') {
			c->data = 0;
			s->msgs++;
			buf_reset(&s->last);
			buf_append(&s->last, c->msg.data, c->msg.len);
			buf_append(&s->all, c->msg.data, c->msg.len);
			buf_puts(&s->all, "=====\n");
			buf_reset(&c->msg);
			c->dot = 1;
			c->quit = s->one_msg;
			sink_say(c, "250 2.0.0 Ok: queued\r\n");
			return;
		}
		if (n > 0 && l[0] == '.') {	/* un-stuff */
			l++;
			n--;
		}
		buf_append(&c->msg, l, n);
		buf_append(&c->msg, "\r\n", 2);
		return;
	}
	snprintf(line, sizeof(line), "%.*s", (int)n, l);
	buf_printf(&s->cmds, "%s\n", line);
	if (strncasecmp(line, "EHLO", 4) == 0 && s->no_ehlo)
		sink_say(c, "502 5.5.2 Error: command not recognized\r\n");
	else if (strncasecmp(line, "EHLO", 4) == 0) {
		sink_say(c, "250-sink.test\r\n");
		if (s->pipelining)
			sink_say(c, "250-PIPELINING\r\n");
		if (s->dsn)
			sink_say(c, "250-DSN\r\n");
		sink_say(c, "250-SIZE 20000000\r\n250 8BITMIME\r\n");
	} else if (strncasecmp(line, "HELO", 4) == 0)
		sink_say(c, "250 sink.test\r\n");
	else if (strncasecmp(line, "MAIL", 4) == 0) {
		s->piped += c->dot;
		c->nok = 0;
		sink_say(c, "250 2.1.0 Ok\r\n");
	} else if (strncasecmp(line, "RCPT", 4) == 0) {
		if (strstr(line, "reject") != NULL)
			sink_say(c, "550 5.1.1 <x>: Recipient address "
			    "rejected: User unknown\r\n");
		else if (strstr(line, "defer") != NULL || s->defer_all)
			sink_say(c, "450 4.2.0 try again later\r\n");
		else {
			c->nok++;
			sink_say(c, "250 2.1.5 Ok\r\n");
		}
	} else if (strncasecmp(line, "DATA", 4) == 0) {
		if (c->nok == 0)
			sink_say(c, "554 5.5.1 Error: no valid recipients\r\n");
		else {
			c->data = 1;
			sink_say(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
		}
	} else if (strncasecmp(line, "RSET", 4) == 0)
		sink_say(c, "250 2.0.0 Ok\r\n");
	else if (strncasecmp(line, "QUIT", 4) == 0) {
		c->quit = 1;
		sink_say(c, "221 2.0.0 Bye\r\n");
	} else
		sink_say(c, "502 5.5.2 Error: command not recognized\r\n");
}

static void
sink_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	static char in[65536];

	*b = uv_buf_init(in, sizeof(in));
}

static void
sink_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct sink_conn *c = st->data;
	const char *p, *nl;
	size_t len;

	if (n < 0) {
		if (!uv_is_closing((uv_handle_t *)st))
			uv_close((uv_handle_t *)st, sink_close_cb);
		return;
	}
	buf_append(&c->in, b->base, (size_t)n);
	c->dot = 0;
	/* after the goodbye, what the client pipelined goes unanswered */
	while (!c->quit && (p = buf_head(&c->in)) != NULL &&
	    buf_avail(&c->in) > 0 &&
	    (nl = memchr(p, '\n', buf_avail(&c->in))) != NULL) {
		len = (size_t)(nl - p);
		sink_line(c, p, len > 0 && p[len - 1] == '\r' ? len - 1 : len);
		buf_consume(&c->in, len + 1);
	}
}

static void
sink_accept(uv_stream_t *server, int status)
{
	struct sink_conn *c;

	c = calloc(1, sizeof(*c));
	c->s = &sink;
	if ((c->next = sink_conns) != NULL)
		sink_conns->prevp = &c->next;
	sink_conns = c;
	c->prevp = &sink_conns;
	uv_tcp_init(loop, &c->tcp);
	c->tcp.data = c;
	assert_int_equal(uv_accept(server, (uv_stream_t *)&c->tcp), 0);
	uv_tcp_nodelay(&c->tcp, 1);
	sink.conns++;
	if (sink.down) {
		c->quit = 1;
		sink_say(c, "421 4.3.2 sink is down\r\n");
		return;
	}
	uv_read_start((uv_stream_t *)&c->tcp, sink_alloc, sink_read);
	if (sink.hold && sink.held == NULL) {
		sink.held = c;		/* the client waits for its banner */
		return;
	}
	sink_say(c, "220 sink.test ESMTP\r\n");
}

/* sink_release - the held connection gets its banner now */
static void
sink_release(void)
{
	struct sink_conn *c = sink.held;

	sink.hold = 0;
	sink.held = NULL;
	if (c != NULL)
		sink_say(c, "220 sink.test ESMTP\r\n");
}

static void
sink_start(void)
{
	struct sockaddr_in sin;
	int len = sizeof(sin);

	memset(&sink, 0, sizeof(sink));
	sink.pipelining = 1;
	uv_tcp_init(loop, &sink.listener);
	uv_ip4_addr("127.0.0.1", 0, &sin);
	assert_int_equal(uv_tcp_bind(&sink.listener, (struct sockaddr *)&sin,
	    0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&sink.listener, 64,
	    sink_accept), 0);
	uv_tcp_getsockname(&sink.listener, (struct sockaddr *)&sin, &len);
	sink.port = ntohs(sin.sin_port);
}

/*
 * The harness
 */

static void
guard_cb(uv_timer_t *t)
{
}

/* run_until - turn the loop until pred() holds; 0, or -1 on timeout */
static int
run_until(int (*pred)(void), unsigned ms)
{
	uv_timer_t guard;
	uint64_t end;
	int rc = -1;

	uv_timer_init(loop, &guard);
	uv_timer_start(&guard, guard_cb, 20, 20);
	uv_update_time(loop);
	end = uv_now(loop) + ms;
	while (uv_now(loop) < end) {
		if (pred()) {
			rc = 0;
			break;
		}
		uv_run(loop, UV_RUN_ONCE);
	}
	uv_close((uv_handle_t *)&guard, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return rc;
}

static int
queue_idle(void)
{
	return TAILQ_EMPTY(mta_queue_all()) && mta_spool_busy() == 0 &&
	    mta_deliver_count() == 0;
}

static int want_msgs;
static int
sink_has(void)
{
	return sink.msgs >= want_msgs && queue_idle();
}

static int
committed_yet(void)
{
	return commit_status != 99;
}

/* settled - nothing in flight: no connection, no spool work */
static int
settled(void)
{
	return mta_spool_busy() == 0 && mta_deliver_count() == 0;
}

static void
write_conf(const char *extra)
{
	char path[128], err[512];
	struct policy *p;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/mxb.conf", dir);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fprintf(fp, "hostname gw.test.example\nspool \"%s/spool\"\n"
	    "pidfile \"%s/pid\"\ncontrol \"%s/sock\"\n"
	    "domain \"example.com\" {\n\tserver 127.0.0.1 port %u\n}\n"
	    "queue {\n\tretry-min 1s\n\tretry-max 60s\n\tfsync yes\n"
	    "\twarn 0\n}\n%s\n", dir, dir, dir, sink.port, extra);
	fclose(fp);
	p = policy_load(path, err, sizeof(err));
	if (p == NULL)
		fail_msg("policy: %s", err);
	policy_set_current(p);
}

static int
setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/mxb-mta-XXXXXX");
	assert_non_null(mkdtemp(dir));
	loop = uv_default_loop();
	sink_start();
	write_conf("");
	memset(&mta_stats, 0, sizeof(mta_stats));
	commit_ok = commit_fail = 0;
	fail_dirsync = fail_datasync = 0;
	rcpt_route = POLICY_ROUTE_ORIGINAL;
	hold_reason = NULL;
	assert_int_equal(mta_module.start(loop, 1), 0);
	return 0;
}

static void
walk_close(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static int
teardown(void **state)
{
	struct sink_conn *c;
	char cmd[128];

	mta_module.stop();
	uv_run(loop, UV_RUN_NOWAIT);
	/* the sink's side of connections the MTA just closed: with their
	 * own close callback, which frees them */
	for (c = sink_conns; c != NULL; c = c->next)
		if (!uv_is_closing((uv_handle_t *)&c->tcp))
			uv_close((uv_handle_t *)&c->tcp, sink_close_cb);
	uv_walk(loop, walk_close, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	buf_free(&sink.last);
	buf_free(&sink.all);
	buf_free(&sink.cmds);
	policy_set_current(NULL);
	mta_dns_set_server(NULL, 0, 0);
	if (getenv("MXB_KEEP") == NULL) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		assert_int_equal(system(cmd), 0);
	}
	return 0;
}

static void
commit_cb(void *arg, int status, const char *s)
{
	commit_status = status;
	if (status == 0)
		commit_ok++;
	else
		commit_fail++;
	snprintf(committed, sizeof(committed), "%s", s);
}

/* queue_msg - one message through the proxy's API, committed */
static void
queue_msg_opts(const char *from, const char *const *rcpts, unsigned notify,
    enum mta_ret ret, const char *body, int wait)
{
	struct mta_info info;
	struct sockaddr_in *sin;
	struct mta_msg *m;
	size_t i, n;

	memset(&info, 0, sizeof(info));
	info.session_id = 7;
	sin = (struct sockaddr_in *)&info.client;
	uv_ip4_addr("192.0.2.101", 40000, sin);
	sin = (struct sockaddr_in *)&info.orig_dst;
	uv_ip4_addr("127.0.0.1", sink.port, sin);
	info.dir = POLICY_DIR_IN;
	info.helo = "c1.test";
	info.sender = from;
	info.ret = ret;
	info.envid = "ENV+2B1";
	info.loop = loop;
	assert_int_equal(mta_can_accept(), 0);
	m = mta_msg_new(&info);
	for (i = 0; rcpts[i] != NULL; i++)
		mta_msg_add_rcpt(m, rcpts[i], i == 0 ? "rfc822;orig+2Bone@"
		    "example.com" : NULL, notify, rcpt_route);
	if (hold_reason != NULL)
		mta_msg_hold(m, hold_reason);
	/* in uneven pieces, as a session would */
	for (i = 0, n = strlen(body); i < n; i += 7)
		assert_int_equal(mta_msg_write(m, body + i,
		    n - i < 7 ? n - i : 7), 0);
	commit_status = 99;
	mta_msg_commit(m, commit_cb, NULL);
	if (wait) {
		assert_int_equal(run_until(committed_yet, 5000), 0);
		assert_int_equal(commit_status, 0);
	}
}

static const char BODY[] =
    "From: <sender@example.com>\r\n"
    "To: <alice@example.com>\r\n"
    "Subject: unit test\r\n"
    "\r\n"
    "first line\r\n"
    ".a line that starts with a dot\r\n"
    ".\r\n"
    "last line\r\n";

static void
queue_msg(const char *from, const char *const *rcpts, unsigned notify,
    enum mta_ret ret)
{
	queue_msg_opts(from, rcpts, notify, ret, BODY, 1);
}

static int
count_dir(const char *sub)
{
	char path[256];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "%s/spool/%s", dir, sub);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static struct policy *
pol(void)
{
	return policy_current();
}

#define assert_has(hay, needle) do {					\
	if (strstr((hay), (needle)) == NULL) {				\
		fprintf(stderr, "----\n%s\n----\n", (hay));		\
		fail_msg("missing \"%s\"", (needle));			\
	}								\
} while (0)
#define assert_hasnt(hay, needle) do {					\
	if (strstr((hay), (needle)) != NULL) {				\
		fprintf(stderr, "----\n%s\n----\n", (hay));		\
		fail_msg("unexpected \"%s\"", (needle));		\
	}								\
} while (0)

/*
 * Envelope format
 */

static void
test_envelope_roundtrip(void **state)
{
	struct mta_env *e, *f;
	struct buf b, st;
	const char *why = NULL;

	e = mta_env_new();
	mta_id_make(e->id);
	e->arrival = 1700000000;
	e->session = 42;
	uv_ip4_addr("192.0.2.101", 1234, (struct sockaddr_in *)&e->client);
	uv_ip6_addr("2001:db8::10", 25, (struct sockaddr_in6 *)&e->orig_dst);
	e->helo = strdup("helo with spaces % and=equals");
	free(e->sender);
	e->sender = strdup("");
	e->envid = strdup("x");
	e->ret = MTA_RET_HDRS;
	e->received = strdup("Received: from x\r\n\tby y; date\r\n");
	e->bodylen = 10;
	e->bodysum = 0x1234;
	mta_rcpt_add(e, "a@example.com", "rfc822;a@example.com",
	    MTA_NOTIFY_SUCCESS | MTA_NOTIFY_FAILURE, POLICY_ROUTE_MX);
	mta_rcpt_add(e, "b@example.org", NULL, 0, POLICY_ROUTE_RELAYHOST);
	e->rcpt[1].diag = strdup("450 4.2.0 try \"later\"");
	e->arrival_ms = 1700000000123ULL;
	e->queued_ms = 1700000000456ULL;
	buf_init(&b);
	mta_env_serialize(e, &b);
	buf_append(&b, "0123456789", 10);

	f = mta_env_new();
	assert_int_equal(mta_env_parse(b.data, b.len, f, &why), 0);
	assert_string_equal(f->id, e->id);
	assert_int_equal(f->arrival, e->arrival);
	assert_string_equal(f->helo, e->helo);
	assert_string_equal(f->sender, "");
	assert_string_equal(f->received, e->received);
	assert_int_equal(f->ret, MTA_RET_HDRS);
	assert_int_equal(f->nrcpt, 2);
	assert_string_equal(f->rcpt[0].orcpt, "rfc822;a@example.com");
	assert_int_equal(f->rcpt[0].route, POLICY_ROUTE_MX);
	assert_int_equal(f->rcpt[0].notify,
	    MTA_NOTIFY_SUCCESS | MTA_NOTIFY_FAILURE);
	assert_string_equal(f->rcpt[1].diag, e->rcpt[1].diag);
	assert_int_equal(f->orig_dst.ss_family, AF_INET6);
	assert_int_equal(f->bodyoff, b.len - 10);
	assert_int_equal(f->arrival_ms, e->arrival_ms);
	assert_int_equal(f->queued_ms, e->queued_ms);
	e->arrival_ms = e->queued_ms = 0;	/* the golden file has none */

	/* the state file overrides the recipients' states */
	e->rcpt[0].state = MTA_RCPT_DELIVERED;
	e->rcpt[1].attempts = 3;
	e->warned = 1;
	buf_init(&st);
	mta_state_serialize(e, &st);
	assert_int_equal(mta_state_parse(st.data, st.len, f), 0);
	assert_int_equal(f->rcpt[0].state, MTA_RCPT_DELIVERED);
	assert_int_equal(f->rcpt[1].attempts, 3);
	assert_int_equal(f->warned, 1);
	mta_env_free(f);

	/* any changed byte in the header, or a cut, is detected */
	b.data[20] ^= 1;
	f = mta_env_new();
	assert_int_equal(mta_env_parse(b.data, b.len, f, &why), -1);
	mta_env_free(f);
	b.data[20] ^= 1;
	f = mta_env_new();
	assert_int_equal(mta_env_parse(b.data, 40, f, &why), -1);
	mta_env_free(f);
	st.data[st.len - 3] ^= 1;
	f = mta_env_new();
	assert_int_equal(mta_env_parse(b.data, b.len, f, &why), 0);
	assert_int_equal(mta_state_parse(st.data, st.len, f), -1);
	mta_env_free(f);
	buf_free(&b);
	buf_free(&st);
	mta_env_free(e);
}

/*
 * The hold in the msg line (held as queued) and the state line (held
 * or released later): a message never held has no hold field at all, as
 * in the files of older versions, which so read as not held
 */
static void
test_envelope_hold(void **state)
{
	struct mta_env *e, *f;
	struct buf b, st;
	const char *why = NULL;

	e = mta_env_new();
	mta_id_make(e->id);
	e->arrival = 1700000000;
	mta_rcpt_add(e, "a@example.com", NULL, 0, POLICY_ROUTE_MX);
	buf_init(&b);
	buf_init(&st);
	mta_env_serialize(e, &b);
	mta_state_serialize(e, &st);
	buf_append(&b, "", 1);
	buf_append(&st, "", 1);
	assert_hasnt(b.data, "hold");
	assert_hasnt(st.data, "hold");

	/* queued on hold: in the message file */
	e->held = 1;
	e->hold_since = 1700000000;
	e->hold_reason = strdup("spam? 100% sure");
	b.len = 0;
	mta_env_serialize(e, &b);
	f = mta_env_new();
	assert_int_equal(mta_env_parse(b.data, b.len, f, &why), 0);
	assert_int_equal(f->held, 1);
	assert_int_equal(f->hold_since, 1700000000);
	assert_string_equal(f->hold_reason, "spam? 100% sure");
	assert_int_equal(f->held_for, 0);

	/* released: the state file says so, and how long it was held */
	e->held = 0;
	e->hold_since = 0;
	free(e->hold_reason);
	e->hold_reason = NULL;
	e->held_for = 3600;
	st.len = 0;
	mta_state_serialize(e, &st);
	assert_int_equal(mta_state_parse(st.data, st.len, f), 0);
	assert_int_equal(f->held, 0);
	assert_null(f->hold_reason);
	assert_int_equal(f->held_for, 3600);

	/* held again later: the state file holds it */
	e->held = 1;
	e->hold_since = 1700007200;
	e->hold_reason = strdup("second look");
	st.len = 0;
	mta_state_serialize(e, &st);
	assert_int_equal(mta_state_parse(st.data, st.len, f), 0);
	assert_int_equal(f->held, 1);
	assert_int_equal(f->hold_since, 1700007200);
	assert_string_equal(f->hold_reason, "second look");
	assert_int_equal(f->held_for, 3600);
	mta_env_free(f);
	buf_free(&b);
	buf_free(&st);
	mta_env_free(e);
}

/*
 * A spool header and state file as written before the FNV, RET and
 * scheduler clean-ups (#12), byte for byte: today's code must write the
 * same bytes and read them back, so that spools of older versions load.
 */
static const char golden_env[] =
    "MXBQ 1\n"
    "msg id=0005f1c2a3b4c5d6 arrival=1700000000 session=7 dir=in "
    "helo=client.example.org from=sender@example.com envid=env%201 "
    "ret=hdrs size=0 body8=0 smtputf8=0 received=Received:%20from%20"
    "client.example.org%20([192.0.2.1])%0d%0a%09by%20box.example.net%20"
    "(mxbridge)%20with%20ESMTP%20id%200005f1c2a3b4c5d6%0d%0a bodylen=6 "
    "bodysum=1122334455667788 warned=1\n"
    "rcpt addr=rcpt@example.net orcpt=rfc822;rcpt@example.net notify=4 "
    "route=mx state=pending attempts=2 next=1700000600 last=1700000300 "
    "status=4.2.0 remote=mx.example.net[198.51.100.7] "
    "diag=451%204.2.0%20try%20later notified=0 relayed=0\n"
    "end sum=86af98a2b0e10722\n";
static const char golden_state[] =
    "MXBS 1\n"
    "state id=0005f1c2a3b4c5d6 warned=1 nrcpt=1\n"
    "rcpt addr=rcpt@example.net orcpt=rfc822;rcpt@example.net notify=4 "
    "route=mx state=pending attempts=2 next=1700000600 last=1700000300 "
    "status=4.2.0 remote=mx.example.net[198.51.100.7] "
    "diag=451%204.2.0%20try%20later notified=0 relayed=0\n"
    "end sum=8a3e4989d7696fcb\n";

static void
test_envelope_golden(void **state)
{
	struct mta_env *e, *f;
	struct buf b;
	const char *why = NULL;

	e = mta_env_new();
	strcpy(e->id, "0005f1c2a3b4c5d6");
	e->arrival = 1700000000;
	e->session = 7;
	e->dir = POLICY_DIR_IN;
	free(e->sender);
	e->sender = strdup("sender@example.com");
	e->helo = strdup("client.example.org");
	e->envid = strdup("env 1");
	e->received = strdup("Received: from client.example.org "
	    "([192.0.2.1])\r\n\tby box.example.net (mxbridge) with ESMTP id "
	    "0005f1c2a3b4c5d6\r\n");
	e->ret = MTA_RET_HDRS;
	e->bodylen = 6;
	e->bodysum = 0x1122334455667788ULL;
	e->warned = 1;
	mta_rcpt_add(e, "rcpt@example.net", "rfc822;rcpt@example.net",
	    MTA_NOTIFY_FAILURE, POLICY_ROUTE_MX);
	e->rcpt[0].attempts = 2;
	e->rcpt[0].next = 1700000600;
	e->rcpt[0].last = 1700000300;
	e->rcpt[0].status = strdup("4.2.0");
	e->rcpt[0].remote = strdup("mx.example.net[198.51.100.7]");
	e->rcpt[0].diag = strdup("451 4.2.0 try later");

	/* written: the same bytes as before */
	buf_init(&b);
	mta_env_serialize(e, &b);
	assert_int_equal(b.len, sizeof(golden_env) - 1);
	assert_memory_equal(b.data, golden_env, b.len);
	b.len = 0;
	mta_state_serialize(e, &b);
	assert_int_equal(b.len, sizeof(golden_state) - 1);
	assert_memory_equal(b.data, golden_state, b.len);
	buf_free(&b);
	mta_env_free(e);

	/* read: the old files load, every field back */
	f = mta_env_new();
	assert_int_equal(mta_env_parse(golden_env, sizeof(golden_env) - 1, f,
	    &why), 0);
	assert_string_equal(f->id, "0005f1c2a3b4c5d6");
	assert_int_equal(f->ret, MTA_RET_HDRS);
	assert_string_equal(f->envid, "env 1");
	assert_int_equal(f->bodysum, 0x1122334455667788ULL);
	assert_int_equal(f->nrcpt, 1);
	assert_int_equal(f->rcpt[0].notify, MTA_NOTIFY_FAILURE);
	assert_int_equal(f->rcpt[0].route, POLICY_ROUTE_MX);
	assert_int_equal(f->bodyoff, sizeof(golden_env) - 1);
	assert_int_equal(mta_state_parse(golden_state,
	    sizeof(golden_state) - 1, f), 0);
	assert_int_equal(f->warned, 1);
	assert_int_equal(f->rcpt[0].attempts, 2);
	assert_string_equal(f->rcpt[0].remote, "mx.example.net[198.51.100.7]");
	mta_env_free(f);

	/* one table per word: spool, "queue show", RET= to the next hop */
	assert_string_equal(mta_ret_name(MTA_RET_UNSET), "unset");
	assert_string_equal(mta_ret_name(MTA_RET_FULL), "full");
	assert_string_equal(mta_ret_name(MTA_RET_HDRS), "hdrs");
	assert_null(mta_ret_param(MTA_RET_UNSET));
	assert_string_equal(mta_ret_param(MTA_RET_FULL), "FULL");
	assert_string_equal(mta_ret_param(MTA_RET_HDRS), "HDRS");
	assert_string_equal(mta_rstate_name(MTA_RCPT_FAILED), "failed");
	assert_string_equal(mta_rstate_name((enum mta_rstate)3), "unknown");
}

/* a recipient's route or state that is no word of ours: corrupt */
static void
test_envelope_bad_words(void **state)
{
	static const char *const bad[] = { "route=mx ", "state=pending " };
	static const char *const with[] = { "route=MX ", "state=done " };
	char *hdr, *p;
	struct mta_env *f;
	struct buf b;
	const char *why = NULL;
	size_t i, end;

	for (i = 0; i < 2; i++) {
		hdr = strdup(golden_env);
		p = strstr(hdr, bad[i]);
		assert_non_null(p);
		memcpy(p, with[i], strlen(with[i]));
		/* a right sum, so only the word can be wrong */
		end = strstr(hdr, "end sum=") - hdr;
		buf_init(&b);
		buf_append(&b, hdr, end);
		buf_printf(&b, "end sum=%016llx\n", (unsigned long long)
		    hash_fnv(HASH_FNV_INIT, hdr, end));
		f = mta_env_new();
		assert_int_equal(mta_env_parse(b.data, b.len, f, &why), -1);
		mta_env_free(f);
		/* and the unchanged one parses */
		b.len = 0;
		buf_append(&b, golden_env, sizeof(golden_env) - 1);
		f = mta_env_new();
		assert_int_equal(mta_env_parse(b.data, b.len, f, &why), 0);
		mta_env_free(f);
		buf_free(&b);
		free(hdr);
	}
}

/*
 * Delivery and DSNs
 */

static void
test_deliver_and_bounce(void **state)
{
	static const char *const rcpts[] = { "alice@example.com",
	    "reject@example.com", NULL };
	char path[256];
	const char *dsn;
	struct stat st;

	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	snprintf(path, sizeof(path), "%s/spool/queue/%s", dir, committed);
	/* durable before the callback: the file is in queue/ */
	assert_int_equal(stat(path, &st), 0);
	want_msgs = 2;
	assert_int_equal(run_until(sink_has, 10000), 0);
	assert_int_equal(sink.msgs, 2);
	/* the original, with our Received: and the dot line intact */
	assert_has(sink.all.data, "Received: from c1.test ([192.0.2.101])");
	assert_has(sink.all.data, "by gw.test.example (mxbridge) with ESMTP");
	assert_has(sink.all.data, "\r\nfirst line\r\n.a line that starts "
	    "with a dot\r\n.\r\nlast line\r\n=====\n");
	assert_has(sink.cmds.data, "MAIL FROM:<sender@example.com> SIZE=");
	/* the DSN: null sender, to the sender, RFC 3464 structure */
	assert_has(sink.cmds.data, "MAIL FROM:<> SIZE=");
	assert_has(sink.cmds.data, "RCPT TO:<sender@example.com>");
	dsn = sink.last.data;
	assert_has(dsn, "To: <sender@example.com>");
	assert_has(dsn, "Auto-Submitted: auto-replied");
	assert_has(dsn, "Content-Type: multipart/report; "
	    "report-type=delivery-status;");
	assert_has(dsn, "Content-Type: message/delivery-status");
	assert_has(dsn, "Reporting-MTA: dns; gw.test.example");
	assert_has(dsn, "Arrival-Date: ");
	assert_has(dsn, "Final-Recipient: rfc822; reject@example.com");
	assert_has(dsn, "Action: failed");
	assert_has(dsn, "Status: 5.1.1");
	assert_has(dsn, "Remote-MTA: dns; [127.0.0.1]");
	assert_has(dsn, "Diagnostic-Code: smtp; 550 5.1.1 <x>: Recipient "
	    "address rejected");
	assert_has(dsn, "Content-Type: message/rfc822");
	assert_has(dsn, "Subject: unit test");
	assert_has(dsn, "\r\nlast line\r\n");
	assert_hasnt(dsn, "alice@example.com>: ");
	assert_int_equal(mta_stats.delivered, 2);
	assert_int_equal(mta_stats.bounced, 1);
	assert_int_equal(mta_stats.dsn_sent, 1);
	/* both messages gone from the spool */
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(count_dir("queue"), 0);
}

static void
test_ret_hdrs_and_orcpt(void **state)
{
	static const char *const rcpts[] = { "reject@example.com", NULL };
	const char *dsn;

	queue_msg("sender@example.com", rcpts, 0, MTA_RET_HDRS);
	want_msgs = 1;
	assert_int_equal(run_until(sink_has, 10000), 0);
	dsn = sink.last.data;
	assert_has(dsn, "Content-Type: text/rfc822-headers");
	assert_has(dsn, "Subject: unit test");
	assert_hasnt(dsn, "first line");
	assert_has(dsn, "Original-Recipient: rfc822;orig+one@example.com");
	assert_has(dsn, "Original-Envelope-Id: ENV+2B1");
}

/*
 * dsn_groups - check a composed DSN's structure: only CRLF line ends, no
 * line over 998, no ESC; its message/delivery-status part, unfolded, is
 * groups of "Name: value" fields, one per-message group then one per
 * recipient, each of those with exactly one Final-Recipient and one
 * Action.  Returns the number of recipient groups; their Final-Recipient
 * values go to finals[] (NUL-separated in a buffer the caller frees).
 */
static size_t
dsn_groups(const char *m, size_t len, struct buf *finals)
{
	const char *p, *end, *line, *eol;
	struct buf u;
	size_t i, col = 0, groups = 0, nfinal, naction;

	for (i = 0; i < len; i++) {
		if (m[i] == '\r' && (i + 1 == len || m[i + 1] != '\n'))
			fail_msg("bare CR at %zu", i);
		if (m[i] == '\n' && (i == 0 || m[i - 1] != '\r'))
			fail_msg("bare LF at %zu", i);
		if (m[i] == 0x1b)
			fail_msg("ESC at %zu", i);
		col = m[i] == '\n' ? 0 : col + 1;
		if (col > 999)
			fail_msg("line over 998 at %zu", i);
	}
	p = strstr(m, "Content-Type: message/delivery-status\r\n\r\n");
	assert_non_null(p);
	p += strlen("Content-Type: message/delivery-status\r\n\r\n");
	end = strstr(p, "\r\n--");
	assert_non_null(end);
	/* unfold: CRLF before a blank joins the lines */
	buf_init(&u);
	for (; p < end; p++) {
		if (p[0] == '\r' && p[1] == '\n' && (p[2] == ' ' ||
		    p[2] == '\t')) {
			p++;
			continue;
		}
		buf_append(&u, p, 1);
	}
	buf_append(&u, "\r\n", 3);	/* the part ends in CRLF */
	p = u.data;
	while (*p != '\0') {
		end = strstr(p, "\r\n\r\n");
		assert_non_null(end);
		nfinal = naction = 0;
		for (line = p; line < end + 2; line = eol + 2) {
			eol = strstr(line, "\r\n");
			if (strspn(line, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij"
			    "klmnopqrstuvwxyz-") == 0 || line[strspn(line,
			    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuv"
			    "wxyz-")] != ':')
				fail_msg("not a field: %.*s", (int)(eol - line),
				    line);
			if (strncmp(line, "Final-Recipient: ", 17) == 0) {
				nfinal++;
				buf_append(finals, line + 17,
				    (size_t)(eol - line - 17));
				buf_append(finals, "\n", 1);
			}
			if (strncmp(line, "Action: ", 8) == 0)
				naction++;
			if (strncmp(line, "X-Forged", 8) == 0)
				fail_msg("forged field: %.*s",
				    (int)(eol - line), line);
		}
		if (groups == 0)
			assert_int_equal(nfinal + naction, 0);
		else if (nfinal != 1 || naction != 1)
			fail_msg("group %zu: %zu Final-Recipient, %zu Action",
			    groups, nfinal, naction);
		groups++;
		p = end + 4;
	}
	buf_free(&u);
	return groups - 1;
}

/*
 * A hostile envelope: ORCPT whose xtext decodes to CR LF and fields of
 * its own, and (as a spool file written before the door checked them)
 * raw CR LF in ORCPT, ENVID, Remote-MTA; a multi-line server reply with
 * ESC, quotes, an empty line and one word longer than a line may be.
 * The DSN has one group per recipient and nothing else.
 */
static void
test_dsn_hostile_envelope(void **state)
{
	static const char *const orcpts[] = {
	    "rfc822;x+0D+0AAction:+20delivered+0D+0A+0D+0AFinal-Recipient:"
	    "+20rfc822;+20forged@example.com+0D+0AAction:+20delivered",
	    "rfc822;raw\r\nAction: delivered\r\n\r\nX-Forged: yes",
	    NULL };
	struct mta_dsnreq *req;
	struct mta_env *env, *dsn;
	struct buf out, finals, diag;
	size_t idx[3] = { 0, 1, 2 }, i;

	env = mta_env_new();
	mta_id_make(env->id);
	env->arrival = time(NULL);
	free(env->sender);
	env->sender = xstrdup("sender@example.com");
	free(env->envid);
	env->envid = xstrdup("ENV\r\nX-Forged: envid");
	buf_init(&diag);
	buf_puts(&diag, "550-5.1.1 first line\r\n550-\x1b[31m \"disposition="
	    "forged\" \x9b\xc0\xaf\r\n550-\r\n550-Action: delivered\r\n\r\n"
	    "X-Forged: diag\r\n550 5.1.1 ");
	for (i = 0; i < 1500; i++)
		buf_append(&diag, "w", 1);
	for (i = 0; i < 40; i++)
		buf_puts(&diag, " word");
	buf_append(&diag, "", 1);
	for (i = 0; i < 3; i++) {
		mta_rcpt_add(env, i == 0 ? "a@example.com" : i == 1 ?
		    "b@example.com" : "c@example.com", orcpts[i], 0,
		    POLICY_ROUTE_ORIGINAL);
		env->rcpt[i].status = xstrdup("5.1.1");
		env->rcpt[i].remote = xstrdup("mx.example\r\nX-Forged: "
		    "remote[192.0.2.7]");
		env->rcpt[i].diag = xstrdup(diag.data);
		env->rcpt[i].last = time(NULL);
	}
	dsn = mta_dsn_new(env, MTA_DSN_FAILURE, idx, 3, &req);
	buf_init(&out);
	buf_init(&finals);
	assert_int_equal(mta_dsn_compose(req, &out), 0);
	buf_append(&out, "", 1);
	assert_int_equal(dsn_groups(out.data, out.len - 1, &finals), 3);
	buf_append(&finals, "", 1);
	assert_string_equal(finals.data, "rfc822; a@example.com\n"
	    "rfc822; b@example.com\nrfc822; c@example.com\n");
	/* a decoding that is not printable stays encoded */
	assert_has(out.data, "Original-Recipient: rfc822;x+0D+0AAction:+20"
	    "delivered+0D+0A+0D+0AFinal-Recipient:");
	assert_has(out.data, "Diagnostic-Code: smtp; 550-5.1.1 first line??"
	    "550-?[31m \"disposition=forged\"\r\n ?????550-??550-Action: "
	    "delivered????X-Forged: diag??550 5.1.1\r\n www");
	assert_has(out.data, "Original-Envelope-Id: ENV??X-Forged: envid");
	assert_has(out.data, "Remote-MTA: dns; mx.example??X-Forged: remote");
	assert_has(out.data, "\r\n word word");	/* folded at a blank */
	assert_hasnt(out.data, "\r\nAction: delivered");
	mta_dsn_free(req);
	mta_env_free(dsn);
	mta_env_free(env);
	buf_free(&out);
	buf_free(&finals);
	buf_free(&diag);
}

static void
test_notify(void **state)
{
	static const char *const rej[] = { "reject@example.com", NULL };
	static const char *const ok[] = { "alice@example.com", NULL };

	/* the sink's capabilities change below: a session per message */
	sink.one_msg = 1;
	/* NEVER: no DSN for a failure */
	queue_msg("sender@example.com", rej, MTA_NOTIFY_NEVER, MTA_RET_FULL);
	assert_int_equal(run_until(queue_idle, 10000), 0);
	assert_int_equal(sink.msgs, 0);
	assert_int_equal(mta_stats.bounced, 1);
	assert_int_equal(mta_stats.dsn_sent, 0);

	/* SUCCESS to a hop without DSN: we tell "delivered" */
	queue_msg("sender@example.com", ok, MTA_NOTIFY_SUCCESS, MTA_RET_FULL);
	want_msgs = 2;
	assert_int_equal(run_until(sink_has, 10000), 0);
	assert_has(sink.last.data, "Action: delivered");
	assert_has(sink.last.data, "Status: 2.");
	assert_has(sink.last.data, "Content-Type: text/rfc822-headers");

	/* SUCCESS to a DSN-capable hop: passed on, no DSN of ours */
	sink.dsn = 1;
	queue_msg("sender@example.com", ok, MTA_NOTIFY_SUCCESS |
	    MTA_NOTIFY_FAILURE, MTA_RET_HDRS);
	want_msgs = 3;
	assert_int_equal(run_until(sink_has, 10000), 0);
	assert_int_equal(sink.msgs, 3);
	assert_has(sink.cmds.data, "RET=HDRS ENVID=ENV+2B1");
	assert_has(sink.cmds.data, "RCPT TO:<alice@example.com> "
	    "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig+2Bone@example.com");
	/* and the DSN of a DSN says NOTIFY=NEVER */
	assert_int_equal(mta_stats.dsn_sent, 1);
}

static void
test_null_sender_dead(void **state)
{
	static const char *const rcpts[] = { "reject@example.com", NULL };

	queue_msg("", rcpts, 0, MTA_RET_UNSET);
	assert_int_equal(run_until(queue_idle, 10000), 0);
	assert_int_equal(sink.msgs, 0);
	assert_int_equal(mta_stats.dsn_sent, 0);
	assert_int_equal(count_dir("queue"), 0);
	assert_int_equal(count_dir("dead"), 1);
	/* dead/ is swept after queue.dead_retention */
	mta_spool_expire_dead(3600);
	assert_int_equal(run_until(settled, 5000), 0);
	assert_int_equal(count_dir("dead"), 1);
	mta_spool_expire_dead(0);
	assert_int_equal(run_until(settled, 5000), 0);
	assert_int_equal(count_dir("dead"), 0);
}

static int
deferred_once(void)
{
	return mta_stats.deferred >= 1 && settled();
}

static void
test_defer_flush(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	struct mta_env *env;

	sink.defer_all = 1;
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	assert_int_equal(run_until(deferred_once, 10000), 0);
	env = mta_queue_find(committed);
	assert_non_null(env);
	assert_int_equal(env->rcpt[0].state, MTA_RCPT_PENDING);
	assert_int_equal(env->rcpt[0].attempts, 1);
	assert_true(env->rcpt[0].next > time(NULL) - 1);
	assert_string_equal(env->rcpt[0].status, "4.2.0");
	assert_has(env->rcpt[0].diag, "450 4.2.0 try again later");
	assert_int_equal(count_dir("queue"), 2);	/* message + state */
	sink.defer_all = 0;
	assert_true(mta_queue_flush(NULL) >= 1);
	want_msgs = 1;
	assert_int_equal(run_until(sink_has, 10000), 0);
	assert_int_equal(sink.msgs, 1);			/* exactly once */
	assert_int_equal(count_dir("queue"), 0);
}

static int
retried(void)
{
	return mta_stats.deferred >= 2 && settled();
}

static void
test_backoff_retry(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };

	/* retry-min 1s: the second attempt comes by itself */
	sink.down = 1;
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	assert_int_equal(run_until(retried, 5000), 0);
	sink.down = 0;
	want_msgs = 1;
	assert_int_equal(run_until(sink_has, 10000), 0);
	assert_true(sink.conns >= 3);
}

static void
test_server_down_conn_refused(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	struct mta_env *env;

	uv_close((uv_handle_t *)&sink.listener, NULL);
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	assert_int_equal(run_until(deferred_once, 10000), 0);
	env = mta_queue_find(committed);
	assert_non_null(env);
	assert_has(env->rcpt[0].diag, "connect to [127.0.0.1]");
	assert_string_equal(env->rcpt[0].status, "4.4.1");
}

static void
test_bounce_command(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	char id[64];

	sink.defer_all = 1;
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	snprintf(id, sizeof(id), "%s", committed);
	assert_int_equal(run_until(deferred_once, 10000), 0);
	assert_int_equal(mta_queue_bounce("0000000000000000"), -1);
	assert_int_equal(mta_queue_bounce(id), 0);
	sink.defer_all = 0;
	want_msgs = 1;
	assert_int_equal(run_until(sink_has, 10000), 0);
	assert_has(sink.last.data, "Final-Recipient: rfc822; alice@example.com");
	assert_has(sink.last.data, "Status: 5.0.0");
	assert_has(sink.last.data, "bounced by the administrator");
	assert_null(mta_queue_find(id));
}

static void
test_delete_command(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };

	sink.defer_all = 1;
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	assert_int_equal(run_until(deferred_once, 10000), 0);
	assert_int_equal(mta_queue_delete(committed), 0);
	assert_int_equal(run_until(settled, 5000), 0);
	assert_null(mta_queue_find(committed));
	assert_int_equal(count_dir("queue"), 0);
	assert_int_equal(sink.msgs, 0);
}

static int
never(void)
{
	return 0;
}

/* file_has - the spool file sub/name holds needle */
static void
file_has(const char *sub, const char *name, const char *needle)
{
	char path[256];
	struct buf b;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/spool/%s/%s", dir, sub, name);
	assert_true((fd = open(path, O_RDONLY)) != -1);
	buf_init(&b);
	buf_reserve(&b, 65536);
	n = read(fd, b.data, b.cap - 1);
	close(fd);
	assert_true(n > 0);
	b.data[n] = '\0';
	assert_has(b.data, needle);
	buf_free(&b);
}

/*
 * queue hold / release: a held message gets no attempt, no expiry and
 * no delay warning (its clocks stop), a flush leaves it alone, a restart
 * keeps it held (the state file); released, it is tried at once, its
 * clocks going on from where they stopped
 */
static void
test_hold_release(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	struct mta_env *env;
	char id[64], st[80];
	int conns;

	sink.defer_all = 1;
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_FULL);
	snprintf(id, sizeof(id), "%s", committed);
	assert_int_equal(run_until(deferred_once, 10000), 0);
	assert_int_equal(mta_queue_hold("0000000000000000", "x"), -1);
	assert_int_equal(mta_queue_release("0000000000000000"), -1);
	assert_int_equal(mta_queue_release(id), 1);	/* not on hold */
	assert_int_equal(mta_queue_hold(id, "looks like spam"), 0);
	assert_int_equal(mta_queue_hold(id, "again"), 1);
	env = mta_queue_find(id);
	assert_non_null(env);
	assert_int_equal(env->held, 1);
	assert_string_equal(env->hold_reason, "looks like spam");

	/* retry-min 1s, warn 1s, lifetime 2s go by: nothing happens */
	pol()->queue.warn = 1;
	pol()->queue.lifetime = 2;
	conns = sink.conns;
	assert_int_equal(mta_queue_flush(NULL), 0);
	mta_queue_kick();
	run_until(never, 3500);
	assert_int_equal(sink.conns, conns);
	assert_int_equal(env->rcpt[0].attempts, 1);
	assert_int_equal(env->rcpt[0].state, MTA_RCPT_PENDING);
	assert_int_equal(env->warned, 0);
	assert_int_equal(mta_stats.expired, 0);
	assert_int_equal(mta_stats.dsn_sent, 0);
	assert_true(mta_queue_age(env, time(NULL)) <= 1);

	/* durable: the state file has it, a restart keeps it held */
	snprintf(st, sizeof(st), "%s.st", id);
	file_has("queue", st, " hold=1 ");
	file_has("queue", st, " holdreason=looks%20like%20spam");
	mta_module.stop();
	uv_run(loop, UV_RUN_NOWAIT);
	assert_int_equal(mta_module.start(loop, 1), 0);
	assert_non_null(env = mta_queue_find(id));
	assert_int_equal(env->held, 1);
	assert_string_equal(env->hold_reason, "looks like spam");
	run_until(never, 1500);
	assert_int_equal(sink.conns, conns);

	/* released: due now, the lifetime left as the hold found it */
	sink.defer_all = 0;
	pol()->queue.warn = 0;
	assert_int_equal(mta_queue_release(id), 0);
	assert_int_equal(mta_queue_release(id), 1);
	assert_int_equal(env->held, 0);
	assert_null(env->hold_reason);
	assert_true(env->held_for >= 4);
	assert_true(mta_queue_age(env, time(NULL)) <= 1);
	want_msgs = 1;
	assert_int_equal(run_until(sink_has, 10000), 0);
	assert_int_equal(sink.msgs, 1);
	assert_int_equal(mta_stats.expired, 0);
	assert_int_equal(mta_stats.dsn_sent, 0);
}

/*
 * mta_msg_hold (a quarantine at ingress): spooled held in the one
 * commit (the message file says so), never tried, held after a restart;
 * an administrator may delete it
 */
static void
test_msg_hold(void **state)
{
	static const char *const rcpts[] = { "alice@example.com",
	    "bob@example.com", NULL };
	struct mta_env *env;
	char id[64];

	hold_reason = "milter quarantine";
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	hold_reason = NULL;
	snprintf(id, sizeof(id), "%s", committed);
	file_has("queue", id, " hold=1 ");
	file_has("queue", id, " holdreason=milter%20quarantine");
	assert_int_equal(count_dir("queue"), 1);	/* no state file */
	assert_non_null(env = mta_queue_find(id));
	assert_int_equal(env->held, 1);
	assert_null(env->mem.data);		/* the body is on disk only */
	run_until(never, 1500);
	assert_int_equal(sink.conns, 0);

	mta_module.stop();
	uv_run(loop, UV_RUN_NOWAIT);
	assert_int_equal(mta_module.start(loop, 1), 0);
	assert_non_null(env = mta_queue_find(id));
	assert_int_equal(env->held, 1);
	assert_string_equal(env->hold_reason, "milter quarantine");
	assert_int_equal(mta_queue_flush(id), 0);
	run_until(never, 1500);
	assert_int_equal(sink.conns, 0);
	assert_int_equal(env->rcpt[0].attempts, 0);

	assert_int_equal(mta_queue_delete(id), 0);
	assert_int_equal(run_until(settled, 5000), 0);
	assert_null(mta_queue_find(id));
	assert_int_equal(count_dir("queue"), 0);
	assert_int_equal(sink.msgs, 0);
}

static int	sink_holding(void);

static int
sink_one(void)
{
	return sink.msgs >= 1 && settled();
}

/* a job waiting for a connection when its message is held goes untried */
static void
test_hold_waiting_job(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	struct mta_qmsg *q;

	/* the first job holds the only connection (at the banner); the
	 * second message's job waits behind it */
	pol()->queue.concurrency = 1;
	sink.hold = 1;
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	assert_int_equal(run_until(sink_holding, 10000), 0);
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	assert_non_null(q = mta_queue_lookup(committed));
	assert_int_equal(q->jobs, 1);
	assert_int_equal(q->busy[0], 1);
	assert_int_equal(mta_queue_hold(committed, "wait"), 0);
	assert_int_equal(q->jobs, 0);
	assert_int_equal(q->busy[0], 0);
	sink.hold = 0;
	sink_release();
	assert_int_equal(run_until(sink_one, 10000), 0);
	run_until(never, 1500);
	assert_int_equal(sink.msgs, 1);
	assert_int_equal(q->env->rcpt[0].attempts, 0);
	assert_int_equal(mta_queue_release(committed), 0);
	want_msgs = 2;
	assert_int_equal(run_until(sink_has, 10000), 0);
	assert_int_equal(sink.msgs, 2);
}

static int
sink_holding(void)
{
	return sink.held != NULL;
}

/*
 * The scheduler's state lives beside the envelope, not in it: a recipient
 * in a job is busy there, and a message deleted while delivering goes
 * once its job is done.
 */
static void
test_delete_in_flight(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	struct mta_qmsg *q;

	/* the first delivery waits for the sink's banner: a job in flight */
	sink.defer_all = 1;
	sink.hold = 1;
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	assert_int_equal(run_until(sink_holding, 10000), 0);
	q = mta_queue_lookup(committed);
	assert_non_null(q);
	assert_ptr_equal(q->env, mta_queue_find(committed));
	assert_int_equal(q->jobs, 1);
	assert_int_equal(q->busy[0], 1);
	assert_int_equal(q->deleted, 0);
	/* bounce leaves a busy recipient alone */
	assert_int_equal(mta_queue_bounce(committed), 0);
	assert_int_equal(q->env->rcpt[0].state, MTA_RCPT_PENDING);
	assert_int_equal(mta_stats.bounced, 0);
	/* deleted while delivering: marked, gone after the job */
	assert_int_equal(mta_queue_delete(committed), 0);
	assert_int_equal(q->deleted, 1);
	assert_int_equal(count_dir("queue"), 1);
	assert_int_equal(mta_queue_bounce(committed), -1);
	q = NULL;
	sink_release();
	assert_int_equal(run_until(deferred_once, 10000), 0);
	assert_null(mta_queue_find(committed));
	assert_int_equal(count_dir("queue"), 0);
	assert_int_equal(sink.msgs, 0);
}

static void
test_expiry(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };

	pol()->queue.lifetime = 0;	/* every deferral is final */
	pol()->queue.dsn_lifetime = 0;
	sink.defer_all = 1;
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	assert_int_equal(run_until(queue_idle, 10000), 0);
	assert_int_equal(mta_stats.expired, 2);	/* and its DSN */
	assert_int_equal(mta_stats.dsn_sent, 1);
	/* the DSN expired too (null sender): it went to dead/ */
	assert_int_equal(count_dir("dead"), 1);
}

/*
 * test_clock_one - the queue's seconds (mta_now) never lag the arrival
 * stamp (mta_now_ms) at a second's turn: with time(2), which reads the
 * coarse clock, a message made just after the turn was a second younger
 * than its arrival, and a lifetime of 0 failed to expire it now and then
 */
static void
test_clock_one(void **state)
{
	uint64_t ms, turn;
	int i;

	for (i = 0; i < 3; i++) {
		turn = mta_now_ms() / 1000 + 1;
		while ((ms = mta_now_ms()) / 1000 < turn)
			;
		assert_true(mta_now() >= (time_t)(ms / 1000));
	}
}

static int
warned(void)
{
	return sink.msgs >= 1 && settled();
}

static void
test_delay_warning(void **state)
{
	static const char *const rcpts[] = { "defer@example.com", NULL };

	pol()->queue.warn = 1;
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_FULL);
	assert_int_equal(run_until(warned, 8000), 0);
	assert_has(sink.last.data, "Subject: Delayed Mail");
	assert_has(sink.last.data, "Action: delayed");
	assert_has(sink.last.data, "Status: 4.2.0");
	assert_has(sink.last.data, "Will-Retry-Until: ");
	assert_has(sink.last.data, "Content-Type: text/rfc822-headers");
	assert_non_null(mta_queue_find(committed));
	assert_int_equal(mta_queue_find(committed)->warned, 1);
}

static void
test_no_pipelining(void **state)
{
	static const char *const rcpts[] = { "reject@example.com",
	    "alice@example.com", "defer@example.com", NULL };
	struct mta_env *env;

	sink.pipelining = 0;
	queue_msg("sender@example.com", rcpts, MTA_NOTIFY_NEVER, MTA_RET_FULL);
	want_msgs = 1;
	assert_int_equal(run_until(deferred_once, 10000), 0);
	assert_int_equal(sink.msgs, 1);
	env = mta_queue_find(committed);
	assert_non_null(env);
	assert_int_equal(env->rcpt[0].state, MTA_RCPT_FAILED);
	assert_int_equal(env->rcpt[1].state, MTA_RCPT_DELIVERED);
	assert_int_equal(env->rcpt[2].state, MTA_RCPT_PENDING);
}

/*
 * test_helo_fallback - a server that refuses EHLO gets HELO from the
 * shared client (common/smtpc.c, own mode), and then commands one at a
 * time with no ESMTP parameter: no PIPELINING, SIZE or BODY
 */
static void
test_helo_fallback(void **state)
{
	static const char *const rcpts[] = { "alice@example.com",
	    "bob@example.com", NULL };
	const char *cmds, *ehlo, *helo;

	sink.no_ehlo = 1;
	queue_msg("sender@example.com", rcpts, MTA_NOTIFY_NEVER, MTA_RET_FULL);
	want_msgs = 1;
	assert_int_equal(run_until(sink_has, 10000), 0);
	assert_int_equal(sink.msgs, 1);
	buf_append(&sink.cmds, "", 1);
	cmds = buf_head(&sink.cmds);
	ehlo = strstr(cmds, "EHLO ");
	helo = strstr(cmds, "HELO ");
	assert_non_null(ehlo);
	assert_non_null(helo);
	assert_true(ehlo < helo);
	assert_null(strstr(cmds, "SIZE="));
	assert_null(strstr(cmds, "BODY="));
	assert_non_null(strstr(cmds, "MAIL FROM:<sender@example.com>\n"));
	assert_non_null(strstr(cmds, "RCPT TO:<bob@example.com>\n"));
	/* delivered to both: nothing left in the queue */
	assert_true(TAILQ_EMPTY(mta_queue_all()));
}

static void
test_big_body_spill(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	size_t n = 3 * 1024 * 1024, i;
	char *body;

	body = malloc(n + 1);
	for (i = 0; i < n; i++)
		body[i] = (i % 100 == 98) ? '\r' : (i % 100 == 99) ? '\n' :
		    (i % 100 == 0) ? '.' : 'a' + i % 26;
	body[n] = '\0';
	queue_msg_opts("sender@example.com", rcpts, 0, MTA_RET_UNSET, body, 0);
	assert_int_equal(run_until(committed_yet, 10000), 0);
	assert_int_equal(commit_status, 0);
	want_msgs = 1;
	assert_int_equal(run_until(sink_has, 20000), 0);
	assert_has(sink.last.data, body);
	assert_int_equal(count_dir("tmp"), 0);
	free(body);
}

static int spill_wakes;

static void
spill_wake_cb(void *arg)
{
	spill_wakes++;
}

static int
spill_woken(void)
{
	return spill_wakes > 0;
}

static int
tmp_empty(void)
{
	return count_dir("tmp") == 0;
}

/* spill_msg - a message whose body went over memory's share: 2 MiB */
static struct mta_msg *
spill_msg(void)
{
	struct mta_info info;
	struct mta_msg *m;
	static char chunk[64 * 1024];
	int i;

	memset(chunk, 'x', sizeof(chunk));
	chunk[sizeof(chunk) - 2] = '\r';
	chunk[sizeof(chunk) - 1] = '\n';
	memset(&info, 0, sizeof(info));
	info.session_id = 9;
	uv_ip4_addr("192.0.2.101", 40000, (struct sockaddr_in *)&info.client);
	uv_ip4_addr("127.0.0.1", sink.port,
	    (struct sockaddr_in *)&info.orig_dst);
	info.dir = POLICY_DIR_IN;
	info.sender = "sender@example.com";
	info.loop = loop;
	m = mta_msg_new(&info);
	mta_msg_add_rcpt(m, "alice@example.com", NULL, 0, rcpt_route);
	spill_wakes = 0;
	mta_msg_set_wake(m, spill_wake_cb, NULL);
	for (i = 0; i < 32; i++)
		assert_int_equal(mta_msg_write(m, chunk, sizeof(chunk)), 0);
	return m;
}

/*
 * The spill file is written on the caller's loop, never inside
 * mta_msg_write: 2 MiB written at once are waiting (busy, no wake from
 * inside the write), the loop writes them and wakes the session once;
 * a message aborted with a request in flight is freed when it comes
 * back, its file removed (ASan: nothing leaks).
 */
static void
test_spill_async(void **state)
{
	struct mta_msg *m;

	m = spill_msg();
	assert_int_equal(mta_msg_busy(m), 1);
	assert_int_equal(spill_wakes, 0);
	assert_int_equal(run_until(spill_woken, 10000), 0);
	assert_int_equal(mta_msg_busy(m), 0);
	commit_status = 99;
	mta_msg_commit(m, commit_cb, NULL);
	assert_int_equal(run_until(committed_yet, 10000), 0);
	assert_int_equal(commit_status, 0);
	assert_int_equal(run_until(tmp_empty, 5000), 0);

	/* aborted at once: the open is in flight */
	m = spill_msg();
	mta_msg_abort(m);
	assert_int_equal(run_until(tmp_empty, 5000), 0);
	assert_int_equal(spill_wakes, 0);
	/* aborted with a write in flight */
	m = spill_msg();
	while (spill_wakes == 0 && count_dir("tmp") == 0)
		uv_run(loop, UV_RUN_ONCE);
	mta_msg_abort(m);
	uv_run(loop, UV_RUN_NOWAIT);
	assert_int_equal(run_until(tmp_empty, 5000), 0);
}

static void
test_group_commit(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	uint64_t b0, o0, b1, o1;
	int i;

	sink.down = 1;
	assert_int_equal(run_until(settled, 5000), 0);
	mta_spool_counts(&b0, &o0);
	for (i = 0; i < 50; i++)
		queue_msg_opts("sender@example.com", rcpts, 0, MTA_RET_UNSET,
		    BODY, 0);
	assert_int_equal(run_until(committed_yet, 5000), 0);
	assert_int_equal(run_until(settled, 10000), 0);
	mta_spool_counts(&b1, &o1);
	/* the 50 commits shared at most two batches (plus state writes) */
	print_message("batches=%llu ops=%llu\n",
	    (unsigned long long)(b1 - b0), (unsigned long long)(o1 - o0));
	assert_true(o1 - o0 >= 50);
	assert_true(b1 - b0 <= (o1 - o0) / 10);
	assert_int_equal(mta_stats.received, 50);
}

static void
test_crash_recovery(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	char path[256], id[3][64];
	int i, fd;

	sink.down = 1;
	for (i = 0; i < 3; i++) {
		queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
		snprintf(id[i], sizeof(id[i]), "%s", committed);
	}
	assert_int_equal(run_until(settled, 5000), 0);
	/* "crash": stop without a word, then damage the spool */
	mta_module.stop();
	uv_run(loop, UV_RUN_NOWAIT);
	snprintf(path, sizeof(path), "%s/spool/queue/%s", dir, id[1]);
	assert_int_equal(truncate(path, 200), 0);		/* torn */
	snprintf(path, sizeof(path), "%s/spool/queue/0123456789abcdef", dir);
	fd = open(path, O_WRONLY | O_CREAT, 0600);		/* garbage */
	assert_int_equal(write(fd, "junk\n", 5), 5);
	close(fd);
	snprintf(path, sizeof(path), "%s/spool/tmp/leftover", dir);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	close(fd);
	/* restart: two load, the damaged ones go to corrupt/ */
	sink.down = 0;
	memset(&mta_stats, 0, sizeof(mta_stats));
	assert_int_equal(mta_module.start(loop, 1), 0);
	assert_int_equal(mta_stats.corrupt, 2);
	assert_int_equal(count_dir("corrupt"), 3);	/* with id[1].st */
	assert_int_equal(count_dir("tmp"), 0);
	assert_non_null(mta_queue_find(id[0]));
	assert_null(mta_queue_find(id[1]));
	mta_queue_flush(NULL);
	want_msgs = 2;
	assert_int_equal(run_until(sink_has, 10000), 0);
	assert_int_equal(sink.msgs, 2);
}

/*
 * The box's Received: is made in one place, the MTA, with the queue id,
 * on top of whatever trace the message brought, another mxbridge's too
 * (the queue sink once wrote its own into the body and the MTA skipped
 * its line when the body began with an "(mxbridge)" one: a message from
 * a box upstream lost this box's hop).
 */
static void
test_session_received(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	static const char body[] =
	    "Received: from c1.test ([192.0.2.101])\r\n"
	    "\tby gw.upstream.example (mxbridge) with ESMTP id 7.1\r\n"
	    "\tfor <alice@example.com>; Sun, 22 Nov 2026 20:00:00 +0000\r\n"
	    "Subject: traced upstream\r\n\r\nbody\r\n";
	const char *p, *ours, *theirs;
	int n = 0;

	queue_msg_opts("sender@example.com", rcpts, 0, MTA_RET_UNSET, body, 1);
	want_msgs = 1;
	assert_int_equal(run_until(sink_has, 10000), 0);
	for (p = sink.last.data; (p = strstr(p, "(mxbridge)")) != NULL; p++)
		n++;
	assert_int_equal(n, 2);
	theirs = strstr(sink.last.data, "by gw.upstream.example");
	ours = strstr(sink.last.data, committed);
	assert_non_null(theirs);
	assert_non_null(ours);
	assert_true(ours < theirs);
}

static void
test_free_space_floor(void **state)
{
	pol()->queue.min_free = UINT64_MAX / 2;
	sleep(1);	/* the check is cached for a second */
	assert_int_equal(mta_can_accept(), -1);
	pol()->queue.min_free = 0;
	sleep(1);
	assert_int_equal(mta_can_accept(), 0);
}

static void
test_dns_literals(void **state)
{
	struct mta_dnsres res;

	assert_int_equal(mta_dns_mx_lookup("[127.0.0.1]", 25, &res), -1);
	assert_int_equal(res.status, 5);
	assert_string_equal(res.code, "5.4.6");
	assert_int_equal(mta_dns_mx_lookup("[192.0.2.55]", 25, &res), 0);
	assert_int_equal(res.nhop, 1);
	assert_int_equal(mta_dns_mx_lookup("[IPv6:2001:db8::5]", 25, &res),
	    0);
	assert_int_equal(res.hop[0].addr.ss_family, AF_INET6);
	assert_int_equal(mta_dns_mx_lookup("[bogus]", 25, &res), -1);
	assert_int_equal(res.status, 5);
}

/*
 * Recycled files, failing syncs
 */

static ino_t
inode_of(const char *sub, const char *name)
{
	char path[512];
	struct stat st;

	snprintf(path, sizeof(path), "%s/spool/%s/%s", dir, sub, name);
	return stat(path, &st) == 0 ? st.st_ino : 0;
}

/* first_name - the first entry of a spool folder, or "" */
static const char *
first_name(const char *sub)
{
	static char name[256];
	char path[512];
	struct dirent *de;
	DIR *d;

	name[0] = '\0';
	snprintf(path, sizeof(path), "%s/spool/%s", dir, sub);
	if ((d = opendir(path)) == NULL)
		return name;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.') {
			snprintf(name, sizeof(name), "%s", de->d_name);
			break;
		}
	closedir(d);
	return name;
}

static void
test_file_recycled(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	char name[256];
	ino_t ino;

	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	want_msgs = 1;
	assert_int_equal(run_until(sink_has, 10000), 0);
	/* the delivered message's file waits in free/, not unlinked */
	assert_int_equal(count_dir("queue"), 0);
	assert_int_equal(count_dir("free"), 1);
	snprintf(name, sizeof(name), "%s", first_name("free"));
	ino = inode_of("free", name);
	assert_true(ino != 0);
	/* the next message is written over it (and deferred, kept) */
	sink.defer_all = 1;
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	assert_int_equal(count_dir("free"), 0);
	assert_int_equal(inode_of("queue", committed), ino);
	/* and it loads after a restart like any other */
	assert_int_equal(run_until(settled, 5000), 0);
	mta_module.stop();
	uv_run(loop, UV_RUN_NOWAIT);
	sink.defer_all = 0;
	assert_int_equal(mta_module.start(loop, 1), 0);
	assert_non_null(mta_queue_find(committed));
	mta_queue_flush(NULL);
	want_msgs = 2;
	assert_int_equal(run_until(sink_has, 10000), 0);
	assert_has(sink.last.data, "\r\nlast line\r\n");
}

/* commit_batch - one commit in flight, then n that pile up behind it */
static void
commit_batch(int n)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	int i;

	sink.down = 1;
	for (i = 0; i <= n; i++)
		queue_msg_opts("sender@example.com", rcpts, 0, MTA_RET_UNSET,
		    BODY, 0);
	assert_int_equal(run_until(settled, 5000), 0);
	assert_int_equal(commit_ok + commit_fail, n + 1);
}

static void
test_dir_fsync_fails_batch(void **state)
{
	/* the second batch's fsync of queue/ fails: all of it is refused */
	fail_dirsync = 2;
	commit_batch(3);
	assert_int_equal(commit_ok, 1);
	assert_int_equal(commit_fail, 3);
	assert_int_equal(mta_stats.received, 1);
	/* what is not acknowledged is not in the queue either */
	assert_int_equal(count_dir("queue"), 1 + 1);	/* and its state */
	assert_non_null(TAILQ_FIRST(mta_queue_all()));
	assert_null(TAILQ_NEXT(TAILQ_FIRST(mta_queue_all()), entry));
}

static void
test_file_fsync_fails_batch(void **state)
{
	/* one file of the second batch fails its fdatasync */
	fail_datasync = 3;
	commit_batch(3);
	assert_int_equal(commit_ok, 1);
	assert_int_equal(commit_fail, 3);
	assert_int_equal(count_dir("tmp"), 0);
}

/*
 * Connection reuse
 */

static void
test_conn_reuse(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };

	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	want_msgs = 1;
	assert_int_equal(run_until(sink_has, 10000), 0);
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	want_msgs = 2;
	assert_int_equal(run_until(sink_has, 10000), 0);
	/* one session for both, still open, idle */
	assert_int_equal(sink.conns, 1);
	assert_int_equal(mta_deliver_count(), 0);
	assert_null(strstr(sink.cmds.data, "QUIT"));
}

/*
 * test_shaping - "destination example.com { recipients-per-message 2;
 * messages-per-connection 2; concurrency 1 }": five recipients go as
 * three transactions, and the third one takes a new connection
 */
static void
test_shaping(void **state)
{
	static const char *const rcpts[] = { "a@example.com", "b@example.com",
	    "c@example.com", "d@example.com", "e@example.com", NULL };
	const char *p;
	int mails = 0, rcpt = 0;

	/* one connection at a time: a second one only when the first is
	 * used up */
	write_conf("destination \"example.com\" {\n\tconcurrency 1\n"
	    "\trecipients-per-message 2\n\tmessages-per-connection 2\n}");
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	want_msgs = 3;
	assert_int_equal(run_until(sink_has, 10000), 0);
	assert_int_equal(sink.msgs, 3);
	buf_append(&sink.cmds, "", 1);
	for (p = sink.cmds.data; (p = strstr(p, "MAIL FROM:")) != NULL; p++)
		mails++;
	for (p = sink.cmds.data; (p = strstr(p, "RCPT TO:")) != NULL; p++)
		rcpt++;
	assert_int_equal(mails, 3);
	assert_int_equal(rcpt, 5);
	/* two transactions on the first connection, the third on another */
	assert_int_equal(sink.conns, 2);
	assert_true(TAILQ_EMPTY(mta_queue_all()));
}

/*
 * test_rate_window - "rate 3 per 1s" as the window keeps it: three start
 * at once, the fourth waits until the first leaves the window, a lower
 * N after a reload waits for more to leave, N 0 never waits
 */
static void
test_rate_window(void **state)
{
	struct mta_rate r;
	int i;

	memset(&r, 0, sizeof(r));
	assert_int_equal(mta_rate_wait(&r, 3, 1000, 1000), 0);
	mta_rate_take(&r, 1000);
	assert_int_equal(mta_rate_wait(&r, 3, 1000, 1100), 0);
	mta_rate_take(&r, 1100);
	assert_int_equal(mta_rate_wait(&r, 3, 1000, 1200), 0);
	mta_rate_take(&r, 1200);
	/* the fourth: when 1000 leaves the window, at 2000 */
	assert_int_equal(mta_rate_wait(&r, 3, 1000, 1300), 700);
	assert_int_equal(mta_rate_wait(&r, 3, 1000, 1999), 1);
	assert_int_equal(mta_rate_wait(&r, 3, 1000, 2000), 0);
	assert_int_equal(r.n, 2);
	mta_rate_take(&r, 2000);
	assert_int_equal(mta_rate_wait(&r, 3, 1000, 2050), 50);
	/* N lowered to 1: 1100, 1200 and 2000 have to leave */
	assert_int_equal(mta_rate_wait(&r, 1, 1000, 2050), 950);
	assert_int_equal(mta_rate_wait(&r, 0, 1000, 2050), 0);
	/* later, the window is empty */
	assert_int_equal(mta_rate_wait(&r, 1, 1000, 3000), 0);
	assert_int_equal(r.n, 0);
	mta_rate_free(&r);

	/* the ring grows past its first size, the order kept */
	for (i = 0; i < 20; i++) {
		assert_int_equal(mta_rate_wait(&r, 20, 60000, 5000 + i), 0);
		mta_rate_take(&r, 5000 + (uint64_t)i);
	}
	assert_int_equal(mta_rate_wait(&r, 20, 60000, 6000), 59000);
	assert_int_equal(mta_rate_wait(&r, 20, 60000, 64999), 1);
	assert_int_equal(mta_rate_wait(&r, 20, 60000, 65001), 0);
	assert_int_equal(r.n, 18);
	mta_rate_free(&r);
}

static int
two_delivered(void)
{
	return sink.msgs >= 2 && mta_stats.rate_held >= 1;
}

/*
 * test_rate - "destination example.com { rate 2 per 1s }": of three
 * messages at once two go at once, the third waits in the queue (not
 * deferred, no attempt) and goes when the window lets it, a second on
 */
static void
test_rate(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	uint64_t t0, t;
	int i;

	write_conf("destination \"example.com\" {\n\trate 2 per 1s\n}");
	t0 = uv_hrtime() / 1000000;
	for (i = 0; i < 3; i++)
		queue_msg_opts("sender@example.com", rcpts, 0, MTA_RET_UNSET,
		    BODY, 0);
	assert_int_equal(run_until(two_delivered, 5000), 0);
	assert_int_equal(sink.msgs, 2);
	assert_int_equal(mta_stats.rate_held, 1);
	want_msgs = 3;
	assert_int_equal(run_until(sink_has, 10000), 0);
	t = uv_hrtime() / 1000000;
	assert_true(t - t0 >= 1000);
	assert_true(t - t0 < 5000);
	assert_int_equal(sink.msgs, 3);
	assert_int_equal(mta_stats.deferred, 0);
	assert_int_equal(mta_stats.delivered, 3);
	assert_int_equal(mta_stats.rate_held, 1);
}

/*
 * test_rate_reload - "rate 1 per 1h" holds the second message back; a
 * reload that lifts the rate ("rate none") lets it go at once
 */
static void
test_rate_reload(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	int i;

	write_conf("destination \"example.com\" {\n"
	    "\trate 1 per 1h\n}");
	for (i = 0; i < 2; i++)
		queue_msg_opts("sender@example.com", rcpts, 0, MTA_RET_UNSET,
		    BODY, 0);
	assert_int_equal(run_until(two_delivered, 1000), -1);
	assert_int_equal(sink.msgs, 1);
	assert_int_equal(mta_stats.rate_held, 1);
	/* held, not deferred: no attempt counted */
	assert_int_equal(mta_stats.deferred, 0);
	write_conf("destination \"example.com\" {\n\trate none\n}");
	mta_queue_reload();
	want_msgs = 2;
	/* before the idle connection's end would pump it (2 s) */
	assert_int_equal(run_until(sink_has, 500), 0);
	assert_int_equal(mta_stats.delivered, 2);
	assert_int_equal(mta_stats.deferred, 0);
}

static int
deferred_twice(void)
{
	return mta_stats.deferred >= 2 && settled();
}

/*
 * test_slow_queue - "slow-after 2; slow-retry 1h": the first retry comes
 * after retry-min, the one after the second failure not before an hour,
 * and the recipient counts as slow
 */
static void
test_slow_queue(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	struct mta_env *env;
	time_t now;

	/* write_conf's queue block, these two changed */
	policy_current()->queue.slow_after = 2;
	policy_current()->queue.slow_retry = 3600;
	sink.defer_all = 1;
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	assert_int_equal(run_until(deferred_once, 5000), 0);
	env = mta_queue_find(committed);
	assert_non_null(env);
	now = time(NULL);
	assert_int_equal(env->rcpt[0].attempts, 1);
	assert_true(env->rcpt[0].next <= now + 2);
	assert_false(mta_queue_rcpt_slow(&env->rcpt[0]));
	assert_int_equal(run_until(deferred_twice, 5000), 0);
	now = time(NULL);
	assert_int_equal(env->rcpt[0].attempts, 2);
	assert_true(mta_queue_rcpt_slow(&env->rcpt[0]));
	assert_true(env->rcpt[0].next >= now + 3500);
}

static void
test_pipelined_dot(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	int i;

	/* a burst: sessions carry several, envelopes ride with a dot */
	for (i = 0; i < 5; i++)
		queue_msg_opts("sender@example.com", rcpts, 0, MTA_RET_UNSET,
		    BODY, 0);
	want_msgs = 5;
	assert_int_equal(run_until(sink_has, 10000), 0);
	assert_int_equal(sink.msgs, 5);
	assert_true(sink.conns < 5);	/* slow start opens a few */
	assert_true(sink.piped >= 1);
	assert_int_equal(mta_stats.delivered, 5);
}

static void
test_reuse_closed_requeue(void **state)
{
	static const char *const rcpts[] = { "alice@example.com", NULL };
	int i;

	/* the sink hangs up after each message, while the next waits */
	sink.one_msg = 1;
	for (i = 0; i < 3; i++)
		queue_msg_opts("sender@example.com", rcpts, 0, MTA_RET_UNSET,
		    BODY, 0);
	want_msgs = 3;
	assert_int_equal(run_until(sink_has, 10000), 0);
	assert_int_equal(sink.msgs, 3);
	assert_int_equal(sink.conns, 3);
	/* a session lost before a word about the job is no deferral */
	assert_int_equal(mta_stats.deferred, 0);
	assert_int_equal(mta_stats.delivered, 3);
}

/*
 * DNS failures: a server that answers SERVFAIL, one that never answers
 */

struct wb;
struct dns_srv {
	int		 fd;
	uint16_t	 port;
	int		 servfail;	/* answer, else stay silent */
	/* or answer from this table: the hostile cases */
	void		(*answer)(struct wb *, const char *, uint16_t,
			    uint16_t);
	int		 formerr_edns;	/* FORMERR to a question with EDNS0 */
	int		 formerrs;	/* ... sent */
	uv_thread_t	 thread;
};

/*
 * Hostile DNS answers: a wire builder, the answers per query name, and
 * rows through the live resolver (a loopback server) and through the
 * parser alone (mta_dns_parse_answer)
 */
struct wb {
	uint8_t		 b[65536];
	size_t		 n;
};

static void
wb_put(struct wb *w, const void *p, size_t n)
{
	assert_true(w->n + n <= sizeof(w->b));
	memcpy(w->b + w->n, p, n);
	w->n += n;
}

static void
wb_16(struct wb *w, unsigned v)
{
	uint8_t b[2] = { (uint8_t)(v >> 8), (uint8_t)v };

	wb_put(w, b, 2);
}

static void
wb_name(struct wb *w, const char *name)
{
	const char *dot;
	uint8_t n;

	while (*name != '\0' && strcmp(name, ".") != 0) {
		dot = strchr(name, '.');
		n = (uint8_t)(dot != NULL ? (size_t)(dot - name) :
		    strlen(name));
		wb_put(w, &n, 1);
		wb_put(w, name, n);
		name += n + (dot != NULL);
	}
	wb_put(w, "", 1);
}

/* wb_hdr - header and question; flags 0x8180: QR RD RA NOERROR */
static void
wb_hdr(struct wb *w, unsigned id, unsigned flags, unsigned an,
    const char *qname, unsigned qtype)
{
	w->n = 0;
	wb_16(w, id);
	wb_16(w, flags);
	wb_16(w, 1);
	wb_16(w, an);
	wb_16(w, 0);
	wb_16(w, 0);
	wb_name(w, qname);
	wb_16(w, qtype);
	wb_16(w, 1);
}

static void
wb_rr(struct wb *w, const char *owner, unsigned type, uint32_t ttl,
    const void *rd, size_t rdlen)
{
	wb_name(w, owner);
	wb_16(w, type);
	wb_16(w, 1);
	wb_16(w, ttl >> 16);
	wb_16(w, ttl & 0xffff);
	wb_16(w, (unsigned)rdlen);
	wb_put(w, rd, rdlen);
}

static void
wb_mx(struct wb *w, const char *owner, unsigned pref, const char *host)
{
	struct wb rd;

	rd.n = 0;
	wb_16(&rd, pref);
	wb_name(&rd, host);
	wb_rr(w, owner, 15, 3600, rd.b, rd.n);
}

static void
wb_cname(struct wb *w, const char *owner, const char *target)
{
	struct wb rd;

	rd.n = 0;
	wb_name(&rd, target);
	wb_rr(w, owner, 5, 3600, rd.b, rd.n);
}

static const uint8_t ip_mx[4] = { 192, 0, 2, 21 };

/*
 * hostile_answer - the answer to (name, type) with id: one case per
 * domain, "mx.NAME" its exchanger
 */
static void
hostile_answer(struct wb *w, const char *q, uint16_t type, uint16_t id)
{
	const char *name = q;
	char owner[300];
	unsigned i;

	if (type == 52) {		/* TLSA: AD, or not; SERVFAIL */
		uint8_t rd[35] = { 3, 1, 1 };

		if (strstr(q, ".fail.test") != NULL) {
			wb_hdr(w, id, 0x8182, 0, q, type);
			return;
		}
		if (strstr(q, ".none.test") != NULL) {
			wb_hdr(w, id, 0x81a0, 0, q, type);
			return;
		}
		wb_hdr(w, id, strstr(q, ".insec.test") != NULL ? 0x8180 :
		    0x81a0, 1, q, type);
		wb_rr(w, q, 52, 300, rd, sizeof(rd));
		return;
	}
	if (strncmp(name, "mx.", 3) == 0)
		name += 3;
	snprintf(owner, sizeof(owner), "mx.%s", name);
	/* a validating resolver's AD on the MX and address answers */
	if (strcmp(name, "secmx.test") == 0 && (type == 15 || type == 1)) {
		wb_hdr(w, id, 0x81a0, 1, q, type);
		if (type == 15)
			wb_mx(w, q, 10, owner);
		else
			wb_rr(w, q, 1, 300, ip_mx, 4);
		return;
	}
	if (type == 15) {		/* MX */
		if (strcmp(name, "nullmx.test") == 0) {
			wb_hdr(w, id, 0x8180, 1, q, type);
			wb_mx(w, q, 0, ".");
		} else if (strcmp(name, "ipmx.test") == 0) {
			wb_hdr(w, id, 0x8180, 2, q, type);
			wb_mx(w, q, 10, "192.0.2.21");
			wb_mx(w, q, 20, "[192.0.2.21]");
		} else if (strcmp(name, "loop.test") == 0) {
			wb_hdr(w, id, 0x8180, 2, q, type);
			wb_cname(w, q, "loop2.test");
			wb_cname(w, "loop2.test", q);
		} else if (strcmp(name, "chain.test") == 0) {
			wb_hdr(w, id, 0x8180, 2, q, type);
			wb_cname(w, q, "target.test");
			wb_mx(w, "target.test", 10, "mx.chain.test");
		} else if (strcmp(name, "other.test") == 0) {
			/* records for a name nobody asked about */
			wb_hdr(w, id, 0x8180, 1, q, type);
			wb_mx(w, "evil.test", 10, "mx.other.test");
		} else if (strcmp(name, "badid.test") == 0) {
			wb_hdr(w, id ^ 1, 0x8180, 1, q, type);
			wb_mx(w, q, 10, owner);
		} else if (strcmp(name, "noqr.test") == 0) {
			wb_hdr(w, id, 0x0180, 1, q, type);
			wb_mx(w, q, 10, owner);
		} else if (strcmp(name, "tc.test") == 0) {
			wb_hdr(w, id, 0x8380, 0, q, type);
		} else if (strcmp(name, "short.test") == 0) {
			wb_hdr(w, id, 0x8180, 1, q, type);
			wb_mx(w, q, 10, owner);
			w->n -= 5;	/* cut inside the exchanger */
		} else if (strcmp(name, "many.test") == 0) {
			wb_hdr(w, id, 0x8180, 10, q, type);
			for (i = 0; i < 10; i++) {
				snprintf(owner, sizeof(owner), "mx%u.many.test",
				    i);
				wb_mx(w, q, 10 + i, owner);
			}
		} else {
			wb_hdr(w, id, 0x8180, 1, q, type);
			wb_mx(w, q, 10, owner);
		}
		return;
	}
	if (type == 1 && strcmp(name, "a0.test") == 0) {
		wb_hdr(w, id, 0x8180, 1, q, type);
		wb_rr(w, q, 1, 3600, "", 0);		/* RDLENGTH 0 */
	} else if (type == 1 && strstr(q, ".many.test") != NULL) {
		uint8_t a[4] = { 192, 0, 2, 0 };

		a[3] = (uint8_t)(100 + q[2] - '0');
		wb_hdr(w, id, 0x8180, 1, q, type);
		wb_rr(w, q, 1, 3600, a, 4);
	} else if (type == 1) {
		/* the exchanger's address; for "X" itself a wrong owner */
		wb_hdr(w, id, 0x8180, 1, q, type);
		wb_rr(w, owner, 1, 0xffffffffu, ip_mx, 4);	/* huge TTL */
	} else if (type == 28 && strcmp(name, "a0.test") == 0) {
		wb_hdr(w, id, 0x8180, 1, q, type);
		wb_rr(w, q, 28, 3600, ip_mx, 4);	/* short AAAA */
	} else
		wb_hdr(w, id, 0x8180, 0, q, type);	/* NODATA */
}

/* dns_srv_table - parse the question, answer from d->answer */
static void
dns_srv_table(struct dns_srv *d, const uint8_t *q, size_t n,
    const struct sockaddr_storage *from, socklen_t flen)
{
	static struct wb w;
	char name[256];
	size_t off = 12, o = 0;

	while (off < n && q[off] != 0 && o + q[off] + 1 < sizeof(name) &&
	    off + 1 + q[off] <= n) {
		if (o > 0)
			name[o++] = '.';
		memcpy(name + o, q + off + 1, q[off]);
		o += q[off];
		off += 1 + q[off];
	}
	name[o] = '\0';
	if (off + 5 > n)
		return;
	if (d->formerr_edns && q[11] != 0) {	/* an old server */
		wb_hdr(&w, (uint16_t)(q[0] << 8 | q[1]), 0x8181, 0, name,
		    (uint16_t)(q[off + 1] << 8 | q[off + 2]));
		d->formerrs++;
		sendto(d->fd, w.b, w.n, 0, (const struct sockaddr *)from, flen);
		return;
	}
	d->answer(&w, name, (uint16_t)(q[off + 1] << 8 | q[off + 2]),
	    (uint16_t)(q[0] << 8 | q[1]));
	sendto(d->fd, w.b, w.n, 0, (const struct sockaddr *)from, flen);
}

static void
dns_srv_run(void *arg)
{
	struct dns_srv *d = arg;
	struct sockaddr_storage from;
	socklen_t flen;
	unsigned char pkt[512];
	ssize_t n;

	for (;;) {
		flen = sizeof(from);
		n = recvfrom(d->fd, pkt, sizeof(pkt), 0,
		    (struct sockaddr *)&from, &flen);
		if (n <= 0)
			return;		/* shut down: done */
		if (n >= 12 && d->answer != NULL) {
			dns_srv_table(d, pkt, (size_t)n, &from, flen);
			continue;
		}
		if (n < 12 || !d->servfail)
			continue;
		pkt[2] = 0x80 | (pkt[2] & 0x79);	/* QR, opcode, RD */
		pkt[3] = 0x80 | 2;			/* RA, SERVFAIL */
		sendto(d->fd, pkt, (size_t)n, 0, (struct sockaddr *)&from,
		    flen);
	}
}

static void
dns_srv_start_fn(struct dns_srv *d, int servfail,
    void (*answer)(struct wb *, const char *, uint16_t, uint16_t))
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	memset(d, 0, sizeof(*d));
	d->servfail = servfail;
	d->answer = answer;
	d->fd = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(d->fd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(d->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(d->fd, (struct sockaddr *)&sin, &len), 0);
	d->port = ntohs(sin.sin_port);
	assert_int_equal(uv_thread_create(&d->thread, dns_srv_run, d), 0);
	mta_dns_set_server("127.0.0.1", d->port, 200);
}

static void
dns_srv_start(struct dns_srv *d, int servfail)
{
	dns_srv_start_fn(d, servfail, NULL);
}

static void
dns_srv_stop(struct dns_srv *d)
{
	shutdown(d->fd, SHUT_RDWR);
	uv_thread_join(&d->thread);
	close(d->fd);
	mta_dns_set_server(NULL, 0, 0);
}

static void
test_dns_servfail_timeout(void **state)
{
	struct mta_dnsres res;
	struct dns_srv d;

	dns_srv_start(&d, 1);
	assert_int_equal(mta_dns_mx_lookup("example.org", 25, &res), -1);
	assert_int_equal(res.status, 4);
	assert_string_equal(res.code, "4.4.3");
	assert_has(res.err, "temporary DNS failure");
	dns_srv_stop(&d);

	dns_srv_start(&d, 0);
	assert_int_equal(mta_dns_mx_lookup("example.org", 25, &res), -1);
	assert_int_equal(res.status, 4);
	assert_string_equal(res.code, "4.4.3");
	dns_srv_stop(&d);
}

static int	dns_answers;
static struct mta_dnsres dns_last;

static void
dns_cb(void *arg, struct mta_dnsres *res)
{
	dns_answers++;
	dns_last = *res;
}

static int
dns_all_answered(void)
{
	return dns_answers == 10 && mta_dns_busy() == 0;
}

static void
test_dns_cap(void **state)
{
	struct dns_srv d;
	int i;

	/* ten lookups at once: a few take threads, the rest wait */
	dns_srv_start(&d, 1);
	dns_answers = 0;
	for (i = 0; i < 10; i++)
		mta_dns_mx(loop, "example.org", 25, dns_cb, NULL);
	assert_int_equal(mta_dns_busy(), 10);
	assert_true(mta_dns_running() >= 1 && mta_dns_running() <= 4);
	assert_int_equal(run_until(dns_all_answered, 10000), 0);
	assert_int_equal(dns_last.status, 4);
	dns_srv_stop(&d);
}

static void
test_dns_servfail_defers(void **state)
{
	static const char *const rcpts[] = { "bob@example.org", NULL };
	struct mta_env *env;
	struct dns_srv d;

	/* an MX route whose lookup fails: deferred, 4.4.3, not bounced */
	dns_srv_start(&d, 1);
	rcpt_route = POLICY_ROUTE_MX;
	queue_msg("sender@example.com", rcpts, 0, MTA_RET_UNSET);
	assert_int_equal(run_until(deferred_once, 10000), 0);
	env = mta_queue_find(committed);
	assert_non_null(env);
	assert_int_equal(env->rcpt[0].state, MTA_RCPT_PENDING);
	assert_string_equal(env->rcpt[0].status, "4.4.3");
	assert_has(env->rcpt[0].diag, "temporary DNS failure");
	assert_int_equal(mta_stats.bounced, 0);
	dns_srv_stop(&d);
}

/* each hostile answer through the live resolver: no crash, RFC outcome */
static void
test_dns_hostile_live(void **state)
{
	static const struct {
		const char	*domain;
		int		 rc, status;
		const char	*code;
	} rows[] = {
		{ "nullmx.test", -1, 5, "5.1.10" },
		{ "a0.test", -1, 4, "4.4.3" },	/* A RDLENGTH 0: aborted */
		{ "ipmx.test", -1, 5, "5.4.4" },
		{ "loop.test", -1, 4, "4.4.3" },
		{ "other.test", -1, 5, "5.1.2" },
		{ "badid.test", -1, 4, "4.4.3" },
		{ "noqr.test", -1, 4, "4.4.3" },
		{ "tc.test", -1, 4, "4.4.3" },
		{ "short.test", -1, 4, "4.4.3" },
		{ "chain.test", 0, 0, "" },
		{ "good.test", 0, 0, "" },
	};
	struct mta_dnsres res;
	struct sockaddr_in *sin;
	struct dns_srv d;
	size_t i;
	int rc;

	dns_srv_start_fn(&d, 0, hostile_answer);
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		rc = mta_dns_mx_lookup(rows[i].domain, 25, &res);
		if (rc != rows[i].rc || res.status != rows[i].status ||
		    strcmp(res.code, rows[i].code) != 0)
			fail_msg("%s: rc %d status %d code %s (%s)",
			    rows[i].domain, rc, res.status, res.code, res.err);
		if (rc == 0) {
			assert_int_equal(res.nhop, 1);
			sin = (struct sockaddr_in *)&res.hop[0].addr;
			assert_int_equal(ntohl(sin->sin_addr.s_addr),
			    0xc0000215);
			assert_has(res.hop[0].name, "mx.");
		}
	}
	/* ten exchangers with an address each: five addresses kept */
	assert_int_equal(mta_dns_mx_lookup("many.test", 25, &res), 0);
	assert_int_equal(res.nhop, 5);
	for (i = 0; i < 5; i++)
		assert_int_equal(ntohl(((struct sockaddr_in *)
		    &res.hop[i].addr)->sin_addr.s_addr) & 0xff, 100 + i);
	dns_srv_stop(&d);
}

/*
 * The DNSSEC status of next hops and TLSA lookups through the live
 * resolver (a loopback server: its AD is believed by default)
 */
static void
test_dns_dane_live(void **state)
{
	static struct mta_tlsa t;
	struct mta_dnsopt opt;
	struct mta_dnsres res;
	struct dns_srv d;

	dns_srv_start_fn(&d, 0, hostile_answer);
	/* MX and A with AD: both secure; without: neither */
	assert_int_equal(mta_dns_mx_lookup("secmx.test", 25, &res), 0);
	assert_int_equal(res.trust_ad, 1);
	assert_int_equal(res.hop[0].dnssec, MTA_HOP_NAMESEC | MTA_HOP_ADDRSEC);
	assert_int_equal(mta_dns_mx_lookup("good.test", 25, &res), 0);
	assert_int_equal(res.hop[0].dnssec, 0);
	/* the TLSA outcomes */
	mta_dns_tlsa_lookup("mx.sec.test", 25, NULL, &t);
	assert_int_equal(t.status, MTA_TLSA_SECURE);
	assert_string_equal(t.name, "_25._tcp.mx.sec.test");
	assert_int_equal(t.n, 1);
	assert_int_equal(t.rr[0].usage, 3);
	assert_int_equal(t.rr[0].len, 32);
	mta_dns_tlsa_lookup("mx.insec.test", 25, NULL, &t);
	assert_int_equal(t.status, MTA_TLSA_INSECURE);
	mta_dns_tlsa_lookup("mx.none.test", 25, NULL, &t);
	assert_int_equal(t.status, MTA_TLSA_NONE);
	mta_dns_tlsa_lookup("mx.fail.test", 25, NULL, &t);
	assert_int_equal(t.status, MTA_TLSA_FAIL);
	assert_has(t.err, "SERVFAIL");
	/* a resolver not trusted: its AD means nothing, nothing is asked */
	mta_dns_opt_default(&opt);
	opt.trust_ad = POLICY_TRUSTAD_NO;
	mta_dns_tlsa_lookup("mx.sec.test", 25, &opt, &t);
	assert_int_equal(t.status, MTA_TLSA_INSECURE);
	assert_has(t.err, "not trusted");
	/* a resolver that refuses EDNS0 (FORMERR) is asked again without */
	d.formerr_edns = 1;
	assert_int_equal(mta_dns_mx_lookup("good.test", 25, &res), 0);
	assert_true(d.formerrs >= 1);
	assert_int_equal(res.hop[0].dnssec, 0);
	dns_srv_stop(&d);
}

/* wb_tlsa - a TLSA record: usage, selector, type, n bytes of data */
static void
wb_tlsa(struct wb *w, const char *owner, unsigned u, unsigned sel,
    unsigned mt, size_t n)
{
	static uint8_t rd[4096];

	assert_true(n + 3 <= sizeof(rd));
	rd[0] = (uint8_t)u;
	rd[1] = (uint8_t)sel;
	rd[2] = (uint8_t)mt;
	memset(rd + 3, 0xa5, n);
	wb_rr(w, owner, 52, 300, rd, n + 3);
}

/* the TLSA parser: usable and unusable records, limits, hostile forms */
static void
test_dns_parse_tlsa(void **state)
{
	static const char *q = "_25._tcp.mx.d.test";
	static struct wb w;
	static struct mta_dnsans ans;
	static struct mta_tlsa t;
	size_t i, full;

	/* DANE-EE and DANE-TA, each selector and matching type; AD read */
	wb_hdr(&w, 0x1234, 0x81a0, 4, q, 52);
	wb_tlsa(&w, q, 3, 1, 1, 32);
	wb_tlsa(&w, q, 2, 0, 2, 64);
	wb_tlsa(&w, q, 3, 0, 0, 700);
	wb_tlsa(&w, q, 3, 1, 1, 32);
	assert_int_equal(mta_dns_parse_tlsa(w.b, w.n, 0x1234, q, &ans, &t),
	    MTA_DNS_OK);
	assert_int_equal(ans.ad, 1);
	assert_int_equal(t.total, 4);
	assert_int_equal(t.n, 4);
	assert_int_equal(t.rr[1].usage, 2);
	assert_int_equal(t.rr[1].mtype, 2);
	assert_int_equal(t.rr[1].len, 64);
	assert_int_equal(t.rr[2].len, 700);
	assert_int_equal(t.used, 32 + 64 + 700 + 32);
	assert_int_equal(t.data[t.rr[2].off + 699], 0xa5);

	/* PKIX usages, unknown selector or type, a digest of the wrong
	 * length: unusable, not malformed; no AD */
	wb_hdr(&w, 0x1234, 0x8180, 6, q, 52);
	wb_tlsa(&w, q, 0, 1, 1, 32);
	wb_tlsa(&w, q, 1, 0, 0, 100);
	wb_tlsa(&w, q, 3, 2, 1, 32);
	wb_tlsa(&w, q, 3, 1, 3, 32);
	wb_tlsa(&w, q, 3, 1, 1, 31);
	wb_tlsa(&w, q, 2, 1, 2, 32);
	assert_int_equal(mta_dns_parse_tlsa(w.b, w.n, 0x1234, q, &ans, &t),
	    MTA_DNS_OK);
	assert_int_equal(ans.ad, 0);
	assert_int_equal(t.total, 6);
	assert_int_equal(t.unusable, 6);
	assert_int_equal(t.n, 0);

	/* no data at all: malformed; alone, a temporary failure */
	wb_hdr(&w, 0x1234, 0x81a0, 1, q, 52);
	wb_tlsa(&w, q, 3, 1, 1, 0);
	assert_int_equal(mta_dns_parse_tlsa(w.b, w.n, 0x1234, q, &ans, &t),
	    MTA_DNS_TEMP);
	assert_int_equal(ans.bad, 1);

	/* every cut of a good answer is refused, none read past the end */
	wb_hdr(&w, 0x1234, 0x81a0, 2, q, 52);
	wb_tlsa(&w, q, 3, 1, 1, 32);
	wb_tlsa(&w, q, 2, 1, 2, 64);
	full = w.n;
	for (i = 0; i < full; i++)
		assert_int_equal(mta_dns_parse_tlsa(w.b, i, 0x1234, q, &ans,
		    &t), MTA_DNS_BAD);
	assert_int_equal(mta_dns_parse_tlsa(w.b, full, 0x1234, q, &ans, &t),
	    MTA_DNS_OK);
	assert_int_equal(t.n, 2);
	/* records of another name or type do not count */
	assert_int_equal(mta_dns_parse_tlsa(w.b, full, 0x1234,
	    "_25._tcp.mx.e.test", &ans, &t), MTA_DNS_BAD);

	/* a CNAME inside the answer is followed */
	wb_hdr(&w, 0x1234, 0x81a0, 2, q, 52);
	wb_cname(&w, q, "_25._tcp.target.test");
	wb_tlsa(&w, "_25._tcp.target.test", 3, 1, 1, 32);
	wb_tlsa(&w, "_25._tcp.evil.test", 3, 1, 1, 32);
	w.b[7] = 3;
	assert_int_equal(mta_dns_parse_tlsa(w.b, w.n, 0x1234, q, &ans, &t),
	    MTA_DNS_OK);
	assert_int_equal(t.total, 1);
	assert_int_equal(t.n, 1);

	/* the data budget: 2000-byte records, as many as fit */
	wb_hdr(&w, 0x1234, 0x81a0, 12, q, 52);
	for (i = 0; i < 12; i++)
		wb_tlsa(&w, q, 3, 0, 0, 2000);
	assert_int_equal(mta_dns_parse_tlsa(w.b, w.n, 0x1234, q, &ans, &t),
	    MTA_DNS_OK);
	assert_int_equal(t.n, MTA_TLSA_MAXDATA / 2000);
	assert_int_equal(t.skipped, 12 - MTA_TLSA_MAXDATA / 2000);
	assert_true(t.used <= MTA_TLSA_MAXDATA);

	/* an RRset of 1300 records (compressed owners, a 61 kB answer):
	 * MTA_TLSA_MAX used, the rest counted, nothing more kept */
	wb_hdr(&w, 0x1234, 0x81a0, 1300, q, 52);
	for (i = 0; i < 1300; i++) {
		uint8_t rd[35] = { 3, 1, 1 };

		rd[3] = (uint8_t)i;
		wb_put(&w, (const uint8_t[]){ 0xc0, 0x0c }, 2);
		wb_16(&w, 52); wb_16(&w, 1); wb_16(&w, 0); wb_16(&w, 300);
		wb_16(&w, sizeof(rd));
		wb_put(&w, rd, sizeof(rd));
	}
	assert_int_equal(mta_dns_parse_tlsa(w.b, w.n, 0x1234, q, &ans, &t),
	    MTA_DNS_OK);
	assert_int_equal(t.total, 1300);
	assert_int_equal(t.n, MTA_TLSA_MAX);
	assert_int_equal(t.skipped, 1300 - MTA_TLSA_MAX);
	assert_int_equal(t.used, MTA_TLSA_MAX * 32);
	assert_int_equal(t.data[t.rr[MTA_TLSA_MAX - 1].off], MTA_TLSA_MAX - 1);
	/* the count says more than there is: malformed */
	w.b[6] = 0xff;
	w.b[7] = 0xff;
	assert_int_equal(mta_dns_parse_tlsa(w.b, w.n, 0x1234, q, &ans, &t),
	    MTA_DNS_BAD);
}

/* parse - mta_dns_parse_answer of the builder's bytes */
static int
parse(const struct wb *w, const char *qname, uint16_t qtype,
    struct mta_dnsans *ans)
{
	return mta_dns_parse_answer(w->b, w->n, 0x1234, qname, qtype, ans);
}

/* the parser alone, on answers no live server needs to send */
static void
test_dns_parse_hostile(void **state)
{
	static struct wb w;
	static struct mta_dnsans ans;
	static const uint8_t a4[4] = { 192, 0, 2, 1 }, a16[16] = { 0x20, 1,
	    0xd, 0xb8 };
	char name[64];
	size_t i, full;
	unsigned k;

	/* A RDLENGTH 0, AAAA of 4 bytes: malformed, temporary */
	wb_hdr(&w, 0x1234, 0x8180, 1, "h.test", 1);
	wb_rr(&w, "h.test", 1, 60, "", 0);
	assert_int_equal(parse(&w, "h.test", 1, &ans), MTA_DNS_TEMP);
	assert_int_equal(ans.bad, 1);
	wb_hdr(&w, 0x1234, 0x8180, 1, "h.test", 28);
	wb_rr(&w, "h.test", 28, 60, a4, 4);
	assert_int_equal(parse(&w, "h.test", 28, &ans), MTA_DNS_TEMP);
	/* a good one next to a bad one is used; huge TTL, any case */
	wb_hdr(&w, 0x1234, 0x8180, 3, "h.test", 1);
	wb_rr(&w, "h.test", 1, 60, "", 0);
	wb_rr(&w, "H.TEST", 1, 0xffffffffu, a4, 4);
	wb_rr(&w, "h.test", 28, 60, a16, 16);	/* another type: ignored */
	assert_int_equal(parse(&w, "h.test", 1, &ans), MTA_DNS_OK);
	assert_int_equal(ans.n, 1);
	assert_int_equal(ans.rr[0].family, AF_INET);
	assert_memory_equal(ans.rr[0].addr, a4, 4);
	wb_hdr(&w, 0x1234, 0x8180, 1, "h.test", 28);
	wb_rr(&w, "h.test", 28, 60, a16, 16);
	assert_int_equal(parse(&w, "h.test", 28, &ans), MTA_DNS_OK);
	assert_int_equal(ans.rr[0].family, AF_INET6);

	/* every cut of a good answer is refused, none read past the end */
	wb_hdr(&w, 0x1234, 0x8180, 2, "d.test", 15);
	wb_mx(&w, "d.test", 10, "mx.d.test");
	wb_mx(&w, "d.test", 20, "mx2.d.test");
	full = w.n;
	assert_int_equal(parse(&w, "d.test", 15, &ans), MTA_DNS_OK);
	assert_int_equal(ans.n, 2);
	for (i = 0; i < full; i++) {
		w.n = i;
		assert_int_equal(parse(&w, "d.test", 15, &ans), MTA_DNS_BAD);
	}
	w.n = full;
	/* not an answer to our question */
	assert_int_equal(mta_dns_parse_answer(w.b, w.n, 0x4321, "d.test", 15,
	    &ans), MTA_DNS_BAD);
	assert_int_equal(parse(&w, "e.test", 15, &ans), MTA_DNS_BAD);
	assert_int_equal(parse(&w, "d.test", 1, &ans), MTA_DNS_BAD);
	w.b[2] &= 0x7f;				/* QR missing */
	assert_int_equal(parse(&w, "d.test", 15, &ans), MTA_DNS_BAD);
	w.b[2] |= 0x80 | 0x10;			/* opcode 2 */
	assert_int_equal(parse(&w, "d.test", 15, &ans), MTA_DNS_BAD);
	w.b[2] = 0x83;				/* TC */
	assert_int_equal(parse(&w, "d.test", 15, &ans), MTA_DNS_TC);
	w.b[2] = 0x81;
	w.b[3] = 0x83;				/* NXDOMAIN */
	assert_int_equal(parse(&w, "d.test", 15, &ans), MTA_DNS_NX);
	w.b[3] = 0x82;				/* SERVFAIL */
	assert_int_equal(parse(&w, "d.test", 15, &ans), MTA_DNS_TEMP);

	/* compression: a pointer to itself, a pointer forward */
	wb_hdr(&w, 0x1234, 0x8180, 1, "d.test", 15);
	i = w.n;
	wb_put(&w, (const uint8_t[]){ 0xc0 | (uint8_t)(i >> 8),
	    (uint8_t)i }, 2);
	wb_16(&w, 15); wb_16(&w, 1); wb_16(&w, 0); wb_16(&w, 60);
	wb_16(&w, 4); wb_16(&w, 10); wb_put(&w, (const uint8_t[]){ 0xc0,
	    0x0c }, 2);
	assert_int_equal(parse(&w, "d.test", 15, &ans), MTA_DNS_BAD);
	w.b[i + 1] = (uint8_t)(i + 2);
	assert_int_equal(parse(&w, "d.test", 15, &ans), MTA_DNS_BAD);
	w.b[i + 1] = 0x0c;			/* to the question: fine */
	assert_int_equal(parse(&w, "d.test", 15, &ans), MTA_DNS_OK);
	assert_string_equal(ans.rr[0].name, "d.test");
	/* MX whose name does not end where its rdata does */
	w.b[w.n - 5] = 5;
	wb_put(&w, "xyz", 1);
	assert_int_equal(parse(&w, "d.test", 15, &ans), MTA_DNS_TEMP);

	/* thousands of MX: the 16 best preferences are kept */
	wb_hdr(&w, 0x1234, 0x8180, 2000, "d.test", 15);
	for (k = 0; k < 2000; k++) {
		wb_put(&w, (const uint8_t[]){ 0xc0, 0x0c }, 2);
		wb_16(&w, 15); wb_16(&w, 1); wb_16(&w, 0); wb_16(&w, 60);
		snprintf(name, sizeof(name), "m%u", k);
		wb_16(&w, 2 + 1 + (unsigned)strlen(name) + 2);
		wb_16(&w, 2000 - k);
		{
			uint8_t l = (uint8_t)strlen(name);

			wb_put(&w, &l, 1);
			wb_put(&w, name, l);
		}
		wb_put(&w, (const uint8_t[]){ 0xc0, 0x0c }, 2);
	}
	assert_int_equal(parse(&w, "d.test", 15, &ans), MTA_DNS_OK);
	assert_int_equal(ans.total, 2000);
	assert_int_equal(ans.n, MTA_DNS_MAXRR);
	for (i = 0; i < ans.n; i++)
		assert_true(ans.rr[i].pref <= MTA_DNS_MAXRR);

	/* CNAME chain inside the answer, and one too long */
	wb_hdr(&w, 0x1234, 0x8180, 3, "d.test", 1);
	wb_cname(&w, "d.test", "c1.test");
	wb_cname(&w, "c1.test", "c2.test");
	wb_rr(&w, "c2.test", 1, 60, a4, 4);
	assert_int_equal(parse(&w, "d.test", 1, &ans), MTA_DNS_OK);
	assert_int_equal(ans.n, 1);
	assert_string_equal(ans.name, "c2.test");
	wb_hdr(&w, 0x1234, 0x8180, 12, "d.test", 1);
	wb_cname(&w, "d.test", "c0.test");
	for (k = 0; k < 11; k++) {
		char a[16], b[16];

		snprintf(a, sizeof(a), "c%u.test", k);
		snprintf(b, sizeof(b), "c%u.test", k + 1);
		wb_cname(&w, a, b);
	}
	assert_int_equal(parse(&w, "d.test", 1, &ans), MTA_DNS_TEMP);
	/* a label with odd bytes: kept for comparing, marked */
	wb_hdr(&w, 0x1234, 0x8180, 1, "d.test", 15);
	wb_mx(&w, "d.test", 10, "[192.0.2.1]");
	assert_int_equal(parse(&w, "d.test", 15, &ans), MTA_DNS_OK);
	assert_int_equal(ans.rr[0].odd, 1);
	/* a null MX */
	wb_hdr(&w, 0x1234, 0x8180, 1, "d.test", 15);
	wb_mx(&w, "d.test", 0, ".");
	assert_int_equal(parse(&w, "d.test", 15, &ans), MTA_DNS_OK);
	assert_string_equal(ans.rr[0].name, ".");
}

/* ids made by several threads at once: each thread's rise strictly, and
 * no id is made twice (mta_id_make's last id is shared and swapped) */
#define ID_THREADS	4
#define ID_PER_THREAD	100000

static pthread_barrier_t	id_start;	/* all make ids at once */

static void *
id_thread(void *arg)
{
	char (*ids)[MTA_IDLEN + 1] = arg;
	int i;

	pthread_barrier_wait(&id_start);
	for (i = 0; i < ID_PER_THREAD; i++)
		mta_id_make(ids[i]);
	return NULL;
}

static int
id_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void
test_id_threads(void **state)
{
	char (*ids)[MTA_IDLEN + 1];
	pthread_t t[ID_THREADS];
	int i, j;

	ids = xcalloc(ID_THREADS * ID_PER_THREAD, sizeof(*ids));
	pthread_barrier_init(&id_start, NULL, ID_THREADS);
	for (i = 0; i < ID_THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, id_thread,
		    ids + i * ID_PER_THREAD), 0);
	for (i = 0; i < ID_THREADS; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&id_start);
	for (i = 0; i < ID_THREADS; i++)
		for (j = 1; j < ID_PER_THREAD; j++)
			assert_true(strcmp(ids[i * ID_PER_THREAD + j - 1],
			    ids[i * ID_PER_THREAD + j]) < 0);
	qsort(ids, ID_THREADS * ID_PER_THREAD, sizeof(*ids), id_cmp);
	for (i = 1; i < ID_THREADS * ID_PER_THREAD; i++)
		if (strcmp(ids[i - 1], ids[i]) == 0)
			fail_msg("id %s made twice", ids[i]);
	free(ids);
}

/*
 * The front door: a worker thread with a loop of its own submits
 * messages with tickets; the daemon's loop (this one) commits them, and
 * each answer comes back on the worker's loop by its ticket.  A closed
 * door gets no answer, and its message is queued all the same; with the
 * MTA stopped, the answer is a refusal.
 */
#define DOOR_MSGS	3

struct door_worker {
	uv_loop_t	 loop;
	uv_timer_t	 keep;		/* the door keeps no loop alive */
	struct mta_door	*door;
	int		 close_early;	/* close the door right after submit */
	int		 answers;
	int		 ok;
	uint64_t	 tickets[DOOR_MSGS];
	char		 ids[DOOR_MSGS][32];
	uv_thread_t	 thread;	/* the caller's, for the check */
	int		 wrong_thread;
	atomic_int	 done;
};

static struct door_worker *door_w;

static void
door_cb(void *arg, uint64_t ticket, int status, const char *text)
{
	struct door_worker *w = arg;
	uv_thread_t self = uv_thread_self();

	if (!uv_thread_equal(&self, &w->thread))
		w->wrong_thread = 1;
	if (w->answers < DOOR_MSGS) {
		w->tickets[w->answers] = ticket;
		snprintf(w->ids[w->answers], sizeof(w->ids[0]), "%s", text);
	}
	w->answers++;
	if (status == 0)
		w->ok++;
	if (w->answers == DOOR_MSGS)
		uv_timer_stop(&w->keep);
}

static void
door_keep_cb(uv_timer_t *t)
{
	struct door_worker *w = t->data;

	/* the closed door: nothing comes; end once the MTA has queued all */
	if (w->close_early && mta_stats.received >= DOOR_MSGS)
		uv_timer_stop(t);
}

static struct mta_msg *
door_msg(uint64_t session)
{
	struct mta_info info;
	struct mta_msg *m;

	memset(&info, 0, sizeof(info));
	info.session_id = session;
	uv_ip4_addr("192.0.2.101", 40000, (struct sockaddr_in *)&info.client);
	uv_ip4_addr("127.0.0.1", sink.port,
	    (struct sockaddr_in *)&info.orig_dst);
	info.dir = POLICY_DIR_IN;
	info.helo = "c1.test";
	info.sender = "sender@example.org";
	m = mta_msg_new(&info);
	mta_msg_add_rcpt(m, "alice@example.com", NULL, 0, rcpt_route);
	assert_int_equal(mta_msg_write(m, BODY, sizeof(BODY) - 1), 0);
	return m;
}

static void
door_thread(void *arg)
{
	struct door_worker *w = arg;
	uint64_t i;

	w->thread = uv_thread_self();
	uv_loop_init(&w->loop);
	uv_timer_init(&w->loop, &w->keep);
	w->keep.data = w;
	uv_timer_start(&w->keep, door_keep_cb, 10, 10);
	w->door = mta_door_open(&w->loop, door_cb, w);
	for (i = 0; i < DOOR_MSGS; i++)
		mta_msg_submit(door_msg(100 + i), w->door, 100 + i);
	if (w->close_early)
		mta_door_close(w->door);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	if (!w->close_early)
		mta_door_close(w->door);
	uv_close((uv_handle_t *)&w->keep, NULL);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	uv_loop_close(&w->loop);
	atomic_store(&w->done, 1);
}

static int
door_done(void)
{
	return atomic_load(&door_w->done);
}

static void
test_front_door(void **state)
{
	struct door_worker w;
	uv_thread_t t;
	uint64_t i;

	/* answered by ticket, on the worker's thread */
	memset(&w, 0, sizeof(w));
	door_w = &w;
	assert_int_equal(uv_thread_create(&t, door_thread, &w), 0);
	assert_int_equal(run_until(door_done, 10000), 0);
	uv_thread_join(&t);
	assert_int_equal(w.answers, DOOR_MSGS);
	assert_int_equal(w.ok, DOOR_MSGS);
	assert_int_equal(w.wrong_thread, 0);
	for (i = 0; i < DOOR_MSGS; i++) {
		assert_int_equal(w.tickets[i], 100 + i);
		assert_int_equal(strlen(w.ids[i]), MTA_IDLEN);
	}
	assert_string_not_equal(w.ids[0], w.ids[1]);
	assert_int_equal(mta_stats.received, DOOR_MSGS);

	/* a door closed before the answers: none read, the mail queued */
	memset(&w, 0, sizeof(w));
	memset(&mta_stats, 0, sizeof(mta_stats));
	w.close_early = 1;
	assert_int_equal(uv_thread_create(&t, door_thread, &w), 0);
	assert_int_equal(run_until(door_done, 10000), 0);
	uv_thread_join(&t);
	assert_int_equal(w.answers, 0);
	assert_int_equal(mta_stats.received, DOOR_MSGS);

	/* the MTA stopped: refused, through the door all the same */
	assert_int_equal(run_until(settled, 10000), 0);
	mta_module.stop();
	uv_run(loop, UV_RUN_NOWAIT);	/* the inbox's handle closes */
	memset(&w, 0, sizeof(w));
	w.thread = uv_thread_self();
	uv_loop_init(&w.loop);
	w.door = mta_door_open(&w.loop, door_cb, &w);
	uv_timer_init(&w.loop, &w.keep);
	w.keep.data = &w;
	uv_timer_start(&w.keep, door_keep_cb, 10, 10);
	mta_msg_submit(door_msg(200), w.door, 200);
	/* one turn reads the answer: the door's handle keeps no loop alive,
	 * the timer does */
	uv_run(&w.loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&w.keep, NULL);
	assert_int_equal(w.answers, 1);
	assert_int_equal(w.ok, 0);
	assert_int_equal(w.tickets[0], 200);
	assert_string_equal(w.ids[0], "queue not running");
	mta_door_close(w.door);
	uv_run(&w.loop, UV_RUN_DEFAULT);
	uv_loop_close(&w.loop);
	assert_int_equal(mta_module.start(loop, 1), 0);
}

/*
 * test_queue_summary - qshape's columns at their edges, and the table of
 * a queue built by hand: recipients by domain (active and deferred apart,
 * delivered ones not counted), messages by sender domain, the largest
 * first, TOTAL on top
 */
static void
summary_msg(struct mta_qmsgq *qq, time_t arrival, const char *from,
    const char *to1, const char *to2, int busy1)
{
	struct mta_qmsg *q = calloc(1, sizeof(*q));

	q->env = mta_env_new();
	free(q->env->sender);
	q->env->sender = strdup(from);
	q->env->arrival = arrival;
	mta_rcpt_add(q->env, to1, NULL, 0, POLICY_ROUTE_MX);
	if (to2 != NULL)
		mta_rcpt_add(q->env, to2, NULL, 0, POLICY_ROUTE_MX);
	q->busy = calloc(q->env->nrcpt, 1);
	q->busy[0] = (unsigned char)busy1;
	TAILQ_INSERT_TAIL(qq, q, entry);
}

static void
test_queue_summary(void **state)
{
	struct mta_qmsgq qq = TAILQ_HEAD_INITIALIZER(qq);
	struct mta_qmsgq empty = TAILQ_HEAD_INITIALIZER(empty);
	struct mta_qmsg *q;
	struct buf b;
	time_t now = 1700000000;

	assert_int_equal(mta_age_bucket(-50), 0);
	assert_int_equal(mta_age_bucket(0), 0);
	assert_int_equal(mta_age_bucket(299), 0);
	assert_int_equal(mta_age_bucket(300), 1);
	assert_int_equal(mta_age_bucket(599), 1);
	assert_int_equal(mta_age_bucket(600), 2);
	assert_int_equal(mta_age_bucket(40 * 60 - 1), 3);
	assert_int_equal(mta_age_bucket(1279 * 60), 8);
	assert_int_equal(mta_age_bucket(1280 * 60 - 1), 8);
	assert_int_equal(mta_age_bucket(1280 * 60), 9);
	assert_int_equal(mta_age_bucket(30L * 86400), 9);

	summary_msg(&qq, now - 60, "a@Example.ORG", "x@b.example",
	    "y@B.example", 0);
	summary_msg(&qq, now - 30 * 60, "", "z@b.example", "w@c.example", 1);
	summary_msg(&qq, now - 2000 * 60, "c@example.org", "v@c.example",
	    NULL, 0);
	summary_msg(&qq, now - 2000 * 60, "d@other.org", "u@d.example", NULL,
	    0);
	TAILQ_LAST(&qq, mta_qmsgq)->env->rcpt[0].state = MTA_RCPT_DELIVERED;

	buf_init(&b);
	mta_queue_summary(&qq, now, 0, &b);
	buf_append(&b, "", 1);
	assert_string_equal(b.data,
	    "active\n"
	    "          T 5 10 20 40 80 160 320 640 1280 1280+\n"
	    "    TOTAL 1 0  0  0  1  0   0   0   0    0     0\n"
	    "b.example 1 0  0  0  1  0   0   0   0    0     0\n"
	    "deferred\n"
	    "          T 5 10 20 40 80 160 320 640 1280 1280+\n"
	    "    TOTAL 4 2  0  0  1  0   0   0   0    0     1\n"
	    "b.example 2 2  0  0  0  0   0   0   0    0     0\n"
	    "c.example 2 0  0  0  1  0   0   0   0    0     1\n");
	b.len = 0;
	mta_queue_summary(&qq, now, 1, &b);
	buf_append(&b, "", 1);
	assert_string_equal(b.data,
	    "active\n"
	    "              T 5 10 20 40 80 160 320 640 1280 1280+\n"
	    "        TOTAL 1 0  0  0  1  0   0   0   0    0     0\n"
	    "MAILER-DAEMON 1 0  0  0  1  0   0   0   0    0     0\n"
	    "deferred\n"
	    "              T 5 10 20 40 80 160 320 640 1280 1280+\n"
	    "        TOTAL 3 1  0  0  1  0   0   0   0    0     1\n"
	    "  example.org 2 1  0  0  0  0   0   0   0    0     1\n"
	    "MAILER-DAEMON 1 0  0  0  1  0   0   0   0    0     0\n");
	/* the first message on hold: its recipients in a third table */
	TAILQ_FIRST(&qq)->env->held = 1;
	b.len = 0;
	mta_queue_summary(&qq, now, 0, &b);
	buf_append(&b, "", 1);
	assert_string_equal(b.data,
	    "active\n"
	    "          T 5 10 20 40 80 160 320 640 1280 1280+\n"
	    "    TOTAL 1 0  0  0  1  0   0   0   0    0     0\n"
	    "b.example 1 0  0  0  1  0   0   0   0    0     0\n"
	    "deferred\n"
	    "          T 5 10 20 40 80 160 320 640 1280 1280+\n"
	    "    TOTAL 2 0  0  0  1  0   0   0   0    0     1\n"
	    "c.example 2 0  0  0  1  0   0   0   0    0     1\n"
	    "hold\n"
	    "          T 5 10 20 40 80 160 320 640 1280 1280+\n"
	    "    TOTAL 2 2  0  0  0  0   0   0   0    0     0\n"
	    "b.example 2 2  0  0  0  0   0   0   0    0     0\n");
	b.len = 0;
	mta_queue_summary(&qq, now, 1, &b);
	buf_append(&b, "", 1);
	assert_has(b.data, "hold\n"
	    "            T 5 10 20 40 80 160 320 640 1280 1280+\n"
	    "      TOTAL 1 1  0  0  0  0   0   0   0    0     0\n"
	    "example.org 1 1  0  0  0  0   0   0   0    0     0\n");
	TAILQ_FIRST(&qq)->env->held = 0;
	/* an empty queue: the headers and TOTAL rows of zeros */
	b.len = 0;
	mta_queue_summary(&empty, now, 0, &b);
	buf_append(&b, "", 1);
	assert_string_equal(b.data,
	    "active\n"
	    "      T 5 10 20 40 80 160 320 640 1280 1280+\n"
	    "TOTAL 0 0  0  0  0  0   0   0   0    0     0\n"
	    "deferred\n"
	    "      T 5 10 20 40 80 160 320 640 1280 1280+\n"
	    "TOTAL 0 0  0  0  0  0   0   0   0    0     0\n");
	buf_free(&b);
	while ((q = TAILQ_FIRST(&qq)) != NULL) {
		TAILQ_REMOVE(&qq, q, entry);
		free(q->busy);
		mta_env_free(q->env);
		free(q);
	}
}

/* Postfix's delay= precision: two significant digits, two decimals at
 * most, whole seconds from 10 on */
static void
test_delay_fmt(void **state)
{
	static const struct { uint64_t ms; const char *want; } rows[] = {
		{ 0, "0" }, { 4, "0" }, { 5, "0.01" }, { 10, "0.01" },
		{ 50, "0.05" }, { 100, "0.1" }, { 123, "0.12" },
		{ 125, "0.13" }, { 994, "0.99" }, { 995, "1" }, { 1000, "1" },
		{ 1234, "1.2" }, { 1250, "1.3" }, { 5020, "5" },
		{ 9949, "9.9" }, { 9950, "10" }, { 12345, "12" },
		{ 15600, "16" }, { 312000, "312" }, { 86400000, "86400" },
	};
	char buf[24];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		if (strcmp(mta_delay_fmt(rows[i].ms, buf, sizeof(buf)),
		    rows[i].want) != 0)
			fail_msg("%llu ms: \"%s\", want \"%s\"",
			    (unsigned long long)rows[i].ms, buf, rows[i].want);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_envelope_roundtrip),
		cmocka_unit_test(test_envelope_hold),
		cmocka_unit_test(test_delay_fmt),
		cmocka_unit_test(test_envelope_golden),
		cmocka_unit_test(test_envelope_bad_words),
		cmocka_unit_test(test_dns_literals),
		cmocka_unit_test(test_id_threads),
		cmocka_unit_test(test_queue_summary),
		cmocka_unit_test_setup_teardown(test_front_door, setup,
		    teardown),
#define T(f)	cmocka_unit_test_setup_teardown(f, setup, teardown)
		T(test_deliver_and_bounce),
		T(test_ret_hdrs_and_orcpt),
		T(test_dsn_hostile_envelope),
		T(test_notify),
		T(test_null_sender_dead),
		T(test_defer_flush),
		T(test_backoff_retry),
		T(test_server_down_conn_refused),
		T(test_bounce_command),
		T(test_delete_command),
		T(test_delete_in_flight),
		T(test_hold_release),
		T(test_msg_hold),
		T(test_hold_waiting_job),
		T(test_expiry),
		cmocka_unit_test(test_clock_one),
		T(test_delay_warning),
		T(test_helo_fallback),
		T(test_shaping),
		T(test_rate_window),
		T(test_rate),
		T(test_rate_reload),
		T(test_slow_queue),
		T(test_no_pipelining),
		T(test_big_body_spill),
		T(test_spill_async),
		T(test_group_commit),
		T(test_crash_recovery),
		T(test_session_received),
		T(test_free_space_floor),
		T(test_file_recycled),
		T(test_dir_fsync_fails_batch),
		T(test_file_fsync_fails_batch),
		T(test_conn_reuse),
		T(test_pipelined_dot),
		T(test_reuse_closed_requeue),
		T(test_dns_servfail_timeout),
		T(test_dns_cap),
		T(test_dns_servfail_defers),
		T(test_dns_hostile_live),
		T(test_dns_dane_live),
		cmocka_unit_test(test_dns_parse_tlsa),
		T(test_dns_parse_hostile),
	};

	log_init("test_mta", 1, getenv("MXB_VERBOSE") != NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
