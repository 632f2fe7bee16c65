/*
 * test_daemon.c - unit tests of daemon/: the pid file decided by its
 * lock (not by the pid written in it), the check mxbridgectl makes of
 * the control socket's answers, and the metrics endpoint's request
 * parser and exposition writer.  Table-driven: a failing row names itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../common/buf.h"
#include "../../daemon/control.h"
#include "../../common/histogram.h"
#include "../../daemon/metrics.h"
#include "../../daemon/pidfile.h"
#include "../../daemon/priv.h"
#include "../../policy/policy.h"

#define N(a)	(sizeof(a) / sizeof((a)[0]))
#define UNUSED	__attribute__((unused))

static const struct {
	const char	*in;
	size_t		 len;		/* 0: strlen(in) */
	int		 rc;
	size_t		 body;
} answers[] = {
	{ "OK\n", 0, 0, 3 },
	{ "OK\nversion=0.1.0\npid=1\n", 0, 0, 3 },
	{ "ERR\n", 0, 1, 4 },
	{ "ERR\nreload refused: x\n", 0, 1, 4 },
	{ "", 0, -1, 0 },
	{ "O", 0, -1, 0 },
	{ "OK", 0, -1, 0 },		/* no newline: was strchr(NULL) */
	{ "ERR", 0, -1, 0 },
	{ "ERR refused", 0, -1, 0 },
	{ "garbage without a newline", 0, -1, 0 },
	{ "garbage\n", 0, -1, 0 },
	{ "OKAY\n", 0, -1, 0 },
	{ "ok\n", 0, -1, 0 },
	{ "ERROR\n", 0, -1, 0 },
	{ "\nOK\n", 0, -1, 0 },
	{ "OK\r\n", 0, -1, 0 },
	{ "OK\nx\0y\n", 7, -1, 0 },	/* a NUL byte */
	{ "\0OK\n", 4, -1, 0 },
};

static void
test_answer_parse(void **state UNUSED)
{
	size_t i, body, len;
	int rc;

	for (i = 0; i < N(answers); i++) {
		len = answers[i].len ? answers[i].len : strlen(answers[i].in);
		body = 999;
		rc = control_answer_parse(answers[i].in, len, &body);
		if (rc != answers[i].rc || (rc != -1 && body != answers[i].body))
			fail_msg("row %zu: rc=%d body=%zu, want rc=%d body=%zu",
			    i, rc, body, answers[i].rc, answers[i].body);
	}
}

/* tmp_path - a fresh path in /tmp (the file itself not made) */
static void
tmp_path(char *path, size_t len)
{
	int fd;

	snprintf(path, len, "/tmp/mxb-pid-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	unlink(path);
}

static void
write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

/* a live holder refuses a second instance, naming its pid */
static void
test_pidfile_held(void **state UNUSED)
{
	char path[64], err[256], want[64];
	int a, b;

	tmp_path(path, sizeof(path));
	a = pidfile_lock(path, err, sizeof(err));
	assert_true(a >= 0);
	assert_int_equal(pidfile_write(a, 4242), 0);
	err[0] = '\0';
	b = pidfile_lock(path, err, sizeof(err));
	assert_int_equal(b, -1);
	snprintf(want, sizeof(want), "already running: pid=4242 pidfile=");
	if (strncmp(err, want, strlen(want)) != 0)
		fail_msg("refusal: \"%s\"", err);
	pidfile_release(a, path);
	assert_int_equal(access(path, F_OK), -1);
	/* gone with its holder: free again */
	b = pidfile_lock(path, err, sizeof(err));
	assert_true(b >= 0);
	pidfile_release(b, path);
}

/* pids in a file nobody holds never block: live, dead, ours, garbage */
static void
test_pidfile_stale(void **state UNUSED)
{
	char path[64], err[256], pid[32], line[32];
	const char *texts[] = { NULL, "1\n", "", "garbage\n", "99999999\n",
	    NULL };
	size_t i;
	ssize_t n;
	int fd;

	tmp_path(path, sizeof(path));
	snprintf(pid, sizeof(pid), "%ld\n", (long)getppid());	/* alive */
	texts[0] = pid;
	snprintf(line, sizeof(line), "%ld\n", (long)getpid());	/* us */
	texts[N(texts) - 1] = line;
	for (i = 0; i < N(texts); i++) {
		write_file(path, texts[i]);
		fd = pidfile_lock(path, err, sizeof(err));
		if (fd < 0)
			fail_msg("row %zu (\"%s\"): refused: %s", i, texts[i],
			    err);
		assert_int_equal(pidfile_write(fd, 77), 0);
		memset(line, 0, sizeof(line));
		n = pread(fd, line, sizeof(line) - 1, 0);
		assert_int_equal(n, 3);
		assert_string_equal(line, "77\n");
		pidfile_release(fd, path);
		snprintf(line, sizeof(line), "%ld\n", (long)getpid());
	}
}

/* a path in a missing directory: a clear error, no lock */
static void
test_pidfile_error(void **state UNUSED)
{
	char err[256];

	assert_int_equal(pidfile_lock("/nonexistent-dir/x.pid", err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "/nonexistent-dir/x.pid"));
}

/* in_child - run fn in a child after priv_sandbox(); its wait status */
static int
in_child(void (*fn)(void))
{
	char err[256];
	pid_t pid;
	int st;

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (priv_sandbox(err, sizeof(err)) == -1) {
			fprintf(stderr, "%s\n", err);
			_exit(2);
		}
		fn();
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return st;
}

/* what the daemon does all day: files, sockets, a thread-free life */
static void
allowed_calls(void)
{
	char path[] = "/tmp/mxb-priv-XXXXXX";
	int fd, s;

	if ((fd = mkstemp(path)) == -1 || write(fd, "x", 1) != 1 ||
	    fsync(fd) == -1 || close(fd) == -1 || unlink(path) == -1)
		_exit(3);
	if ((s = socket(AF_INET, SOCK_STREAM, 0)) == -1 || close(s) == -1)
		_exit(4);
}

/* what it never does: become root again */
static void
forbidden_call(void)
{
	(void)syscall(SYS_setresuid, 0, 0, 0);
	_exit(5);	/* not reached: the filter kills the process */
}

static void
forbidden_exec(void)
{
	static char prog[] = "/bin/true";
	char *argv[] = { prog, NULL };

	(void)execv(argv[0], argv);
	_exit(6);
}

/* the allowlist: what is on it works, the rest kills with SIGSYS */
static void
test_sandbox(void **state UNUSED)
{
	int st;

	st = in_child(allowed_calls);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	st = in_child(forbidden_call);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGSYS);
	st = in_child(forbidden_exec);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGSYS);
}

/* user_policy - a configuration naming user u (its path into path) */
static struct policy *
user_policy(const char *u, char *path, size_t len)
{
	char text[128], err[512];
	struct policy *p;
	int fd;

	snprintf(path, len, "/tmp/mxb-priv-XXXXXX");
	assert_true((fd = mkstemp(path)) >= 0);
	snprintf(text, sizeof(text), "user \"%s\"\n", u);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	p = policy_load(path, err, sizeof(err));
	unlink(path);
	if (p == NULL)
		fail_msg("%s", err);
	return p;
}

/* the user: looked up, never root, a missing one named with the fix */
static void
test_user_lookup(void **state UNUSED)
{
	struct policy *p;
	char err[512], path[64];
	uid_t uid;
	gid_t gid;

	p = user_policy("no-such-user-mxb", path, sizeof(path));
	assert_int_equal(priv_lookup(p, &uid, &gid, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "user no-such-user-mxb: no such user"));
	assert_non_null(strstr(err, path));
	policy_unref(p);
	p = user_policy("nobody", path, sizeof(path));
	assert_int_equal(priv_lookup(p, &uid, &gid, err, sizeof(err)), 0);
	assert_true(uid != 0);
	policy_unref(p);
}

/* the metrics endpoint's request heads: what each is answered */
static const struct {
	const char	*in;
	size_t		 len;		/* 0: strlen(in) */
	int		 code;
	int		 head;
} requests[] = {
	{ "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 0, 200, 0 },
	{ "GET /metrics HTTP/1.0\r\n\r\n", 0, 200, 0 },
	{ "GET /metrics HTTP/1.0\n\n", 0, 200, 0 },
	{ "GET /metrics?x=1 HTTP/1.1\r\n\r\n", 0, 200, 0 },
	{ "HEAD /metrics HTTP/1.1\r\n\r\n", 0, 200, 1 },
	/* pipelined: the first request only */
	{ "GET /metrics HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", 0, 200, 0 },
	{ "GET /metricsx HTTP/1.1\r\n\r\n", 0, 404, 0 },
	{ "GET / HTTP/1.1\r\n\r\n", 0, 404, 0 },
	{ "GET /metrics/ HTTP/1.1\r\n\r\n", 0, 404, 0 },
	{ "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 0, 405, 0 },
	{ "get /metrics HTTP/1.1\r\n\r\n", 0, 405, 0 },
	{ "GET /metrics HTTP/2.0\r\n\r\n", 0, 505, 0 },
	{ "GET /metrics HTTP/1.9\r\n\r\n", 0, 505, 0 },
	{ "GET /metrics HTTP/1.10\r\n\r\n", 0, 400, 0 },
	{ "GET /metrics HTTP/0.9\r\n\r\n", 0, 505, 0 },
	/* incomplete: more is needed */
	{ "", 0, 0, 0 },
	{ "GET /metr", 0, 0, 0 },
	{ "GET /metrics HTTP/1.1\r\n", 0, 0, 0 },
	{ "GET /metrics HTTP/1.1\r\nHost: x\r\n", 0, 0, 0 },
	/* not HTTP: refused as soon as the first line is in */
	{ "\r\n", 0, 400, 0 },
	{ "garbage\r\n", 0, 400, 0 },
	{ "GET\r\n", 0, 400, 0 },
	{ "GET /metrics\r\n", 0, 400, 0 },
	{ "GET  /metrics HTTP/1.1\r\n", 0, 400, 0 },
	{ "GET /metrics HTTP/1.1 x\r\n", 0, 400, 0 },
	{ "GET /met\x01rics HTTP/1.1\r\n", 0, 400, 0 },
	{ "GET /m\xc3\xa9trics HTTP/1.1\r\n", 0, 400, 0 },
	{ "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n", 12, 400, 0 },
	{ "GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", 0, 400, 0 },
	{ "GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n", 0, 400, 0 },
	{ "GET /metrics HTTP/1.1\r\nX: a\x02z\r\n\r\n", 0, 400, 0 },
	{ "GET /metrics HTTP/1.1\0\r\n\r\n", 25, 400, 0 },
	{ "GET /\0", 6, 400, 0 },
};

static void
test_metrics_request(void **state UNUSED)
{
	size_t i, len;
	int code, head;

	for (i = 0; i < N(requests); i++) {
		len = requests[i].len ? requests[i].len : strlen(requests[i].in);
		head = -1;
		code = metrics_http_request(requests[i].in, len, &head);
		if (code != requests[i].code ||
		    (code == 200 && head != requests[i].head))
			fail_msg("row %zu: code=%d head=%d, want %d %d", i,
			    code, head, requests[i].code, requests[i].head);
	}
}

/* a head that never ends: 431 at METRICS_MAXREQ, whatever it holds */
static void
test_metrics_request_huge(void **state UNUSED)
{
	char *big = malloc(METRICS_MAXREQ + 1);
	size_t n;
	int head;

	assert_non_null(big);
	n = (size_t)snprintf(big, METRICS_MAXREQ, "GET /metrics HTTP/1.1\r\n");
	memset(big + n, 'a', METRICS_MAXREQ - n);
	memcpy(big + n, "X-Long: ", 8);
	assert_int_equal(metrics_http_request(big, METRICS_MAXREQ - 1, &head), 0);
	assert_int_equal(metrics_http_request(big, METRICS_MAXREQ, &head), 431);
	memset(big, 'G', METRICS_MAXREQ);	/* no line at all */
	assert_int_equal(metrics_http_request(big, METRICS_MAXREQ - 1, &head), 0);
	assert_int_equal(metrics_http_request(big, METRICS_MAXREQ, &head), 431);
	free(big);
}

/*
 * expose_is - metrics_expose of the stats lines (len bytes) is want,
 * byte for byte; on a difference, where and what follows there
 */
static void
expose_is(const char *stats, size_t len, const char *want)
{
	size_t i, wlen = strlen(want);
	struct buf out;

	buf_init(&out);
	metrics_expose(stats, len, &out);
	for (i = 0; i < out.len && i < wlen && out.data[i] == want[i]; i++)
		;
	if (out.len != wlen || i != out.len)
		fail_msg("exposition differs at byte %zu: \"%.*s\"", i,
		    (int)(out.len - i < 120 ? out.len - i : 120), out.data + i);
	buf_free(&out);
}

static void
test_metrics_expose(void **state UNUSED)
{
	static const char stats[] =
	    "workers=2\n"
	    "proxy_accepted_incoming=7\n"
	    "proxy_sessions=3\n"
	    "queue_messages=1\n"
	    "delivered=5\n"
	    "some_new_key=9\n"
	    "delivered=6\n"			/* a duplicate: left out */
	    "bad value=x\n"			/* not a number */
	    "noequals\n"
	    "=5\n"
	    "9lives=1\n"
	    "worker.0.proxy_accepted_incoming=4\n"
	    "worker.0.proxy_sessions=1\n"
	    "worker.1.proxy_accepted_incoming=3\n"
	    "worker.1.proxy_sessions=2\n"
	    "worker.1.proxy_sessions=8\n"	/* a duplicate */
	    "worker.x.proxy_sessions=8\n"	/* no worker number */
	    "worker.0.nfq_decisions=11\n"
	    "worker.1.nfq_decisions=12";	/* no final newline */
	static const char want[] =
	    "# HELP mxbridge_workers Worker threads.\n"
	    "# TYPE mxbridge_workers gauge\n"
	    "mxbridge_workers 2\n"
	    "# HELP mxbridge_proxy_accepted_incoming_total Incoming sessions "
	    "accepted.\n"
	    "# TYPE mxbridge_proxy_accepted_incoming_total counter\n"
	    "mxbridge_proxy_accepted_incoming_total 7\n"
	    "# HELP mxbridge_proxy_sessions Sessions open.\n"
	    "# TYPE mxbridge_proxy_sessions gauge\n"
	    "mxbridge_proxy_sessions 3\n"
	    "# HELP mxbridge_queue_messages Messages in the queue; with "
	    "queue=, in that queue (a message in each queue where it has a "
	    "pending recipient).\n"
	    "# TYPE mxbridge_queue_messages gauge\n"
	    "mxbridge_queue_messages 1\n"
	    "# HELP mxbridge_delivered_total Recipients delivered.\n"
	    "# TYPE mxbridge_delivered_total counter\n"
	    "mxbridge_delivered_total 5\n"
	    "# HELP mxbridge_some_new_key mxbridgectl stats some_new_key.\n"
	    "# TYPE mxbridge_some_new_key untyped\n"
	    "mxbridge_some_new_key 9\n"
	    "# HELP mxbridge_worker_proxy_accepted_incoming_total Incoming "
	    "sessions accepted. Per worker thread.\n"
	    "# TYPE mxbridge_worker_proxy_accepted_incoming_total counter\n"
	    "mxbridge_worker_proxy_accepted_incoming_total{worker=\"0\"} 4\n"
	    "mxbridge_worker_proxy_accepted_incoming_total{worker=\"1\"} 3\n"
	    "# HELP mxbridge_worker_proxy_sessions Sessions open. Per worker "
	    "thread.\n"
	    "# TYPE mxbridge_worker_proxy_sessions gauge\n"
	    "mxbridge_worker_proxy_sessions{worker=\"0\"} 1\n"
	    "mxbridge_worker_proxy_sessions{worker=\"1\"} 2\n"
	    "# HELP mxbridge_worker_nfq_decisions_total New flows decided. "
	    "Per worker thread.\n"
	    "# TYPE mxbridge_worker_nfq_decisions_total counter\n"
	    "mxbridge_worker_nfq_decisions_total{worker=\"0\"} 11\n"
	    "mxbridge_worker_nfq_decisions_total{worker=\"1\"} 12\n";
	struct buf out;

	expose_is(stats, sizeof(stats) - 1, want);
	buf_init(&out);
	metrics_expose("", 0, &out);
	assert_int_equal(out.len, 0);
	buf_free(&out);
}

/* labelled families: FAMILY.V1.V2 lines, and the classifier's plain
 * keys as nfq_flows{direction,action} too */
static void
test_metrics_labels(void **state UNUSED)
{
	static const char stats[] =
	    "nfq_incoming_proxy=3\n"
	    "sessions.incoming.relay=2\n"
	    "sessions.incoming.mta=5\n"
	    "sessions.incoming=1\n"		/* a value short */
	    "sessions.a.b.c=1\n"		/* one too many */
	    "sessions.in\"x.mta=1\n"		/* not a word */
	    "sessions..mta=1\n"			/* empty */
	    "sessions.incoming.mta=6\n"		/* a duplicate */
	    "sessions_open.outgoing.mta=1\n"
	    "nfq_outgoing_drop=4\n"
	    "sessions_ended.quit=4\n"
	    "messages_refused.too-big=1\n";
	static const char want[] =
	    "# HELP mxbridge_nfq_incoming_proxy_total New incoming flows sent "
	    "to the proxy.\n"
	    "# TYPE mxbridge_nfq_incoming_proxy_total counter\n"
	    "mxbridge_nfq_incoming_proxy_total 3\n"
	    "# HELP mxbridge_nfq_flows_total New flows classified, by "
	    "direction and action.\n"
	    "# TYPE mxbridge_nfq_flows_total counter\n"
	    "mxbridge_nfq_flows_total{direction=\"incoming\",action=\"proxy\"} 3\n"
	    "mxbridge_nfq_flows_total{direction=\"outgoing\",action=\"drop\"} 4\n"
	    "# HELP mxbridge_sessions_total SMTP sessions started, by direction "
	    "and path.\n"
	    "# TYPE mxbridge_sessions_total counter\n"
	    "mxbridge_sessions_total{direction=\"incoming\",path=\"relay\"} 2\n"
	    "mxbridge_sessions_total{direction=\"incoming\",path=\"mta\"} 5\n"
	    "# HELP mxbridge_sessions_open SMTP sessions open, by direction and "
	    "path.\n"
	    "# TYPE mxbridge_sessions_open gauge\n"
	    "mxbridge_sessions_open{direction=\"outgoing\",path=\"mta\"} 1\n"
	    "# HELP mxbridge_nfq_outgoing_drop_total New outgoing flows "
	    "dropped.\n"
	    "# TYPE mxbridge_nfq_outgoing_drop_total counter\n"
	    "mxbridge_nfq_outgoing_drop_total 4\n"
	    "# HELP mxbridge_sessions_ended_total SMTP sessions ended, by "
	    "disposition.\n"
	    "# TYPE mxbridge_sessions_ended_total counter\n"
	    "mxbridge_sessions_ended_total{disposition=\"quit\"} 4\n"
	    "# HELP mxbridge_messages_refused_total Messages refused to the "
	    "client at the end of their data, by reason.\n"
	    "# TYPE mxbridge_messages_refused_total counter\n"
	    "mxbridge_messages_refused_total{reason=\"too-big\"} 1\n";

	expose_is(stats, sizeof(stats) - 1, want);
}

/* a histogram: observed, as stats lines, then as a Prometheus family */
static void
test_metrics_histogram(void **state UNUSED)
{
	static const uint64_t bounds[] = { 5000, 1000000, 2500000 };
	static struct histogram h = HISTOGRAM_INIT(bounds);
	static const char want_stats[] =
	    "d.le.0.005=1\n"
	    "d.le.1=3\n"
	    "d.le.2.5=3\n"
	    "d.le.+Inf=4\n"
	    "d.sum=3601.255000\n"
	    "d.count=4\n";
	static const char extra[] =
	    "delivery_delay_seconds.le.0.1=2\n"
	    "delivery_delay_seconds.le.+Inf=3\n"
	    "delivery_delay_seconds.le.0.1=9\n"	/* a duplicate */
	    "delivery_delay_seconds.le.x=1\n"	/* a bad bound */
	    "delivery_delay_seconds.sum=1.5\n"
	    "delivery_delay_seconds.count=3\n"
	    "queued=1.5\n"			/* decimals: a sum's only */
	    "delivery_delay_seconds.sum=.5\n"
	    "worker.1.w.le.1=2\n"
	    "worker.1.w.sum=0.25\n"
	    "worker.1.w.count=2\n";
	static const char want[] =
	    "# HELP mxbridge_d mxbridgectl stats d.\n"
	    "# TYPE mxbridge_d histogram\n"
	    "mxbridge_d_bucket{le=\"0.005\"} 1\n"
	    "mxbridge_d_bucket{le=\"1\"} 3\n"
	    "mxbridge_d_bucket{le=\"2.5\"} 3\n"
	    "mxbridge_d_bucket{le=\"+Inf\"} 4\n"
	    "mxbridge_d_sum 3601.255000\n"
	    "mxbridge_d_count 4\n"
	    "# HELP mxbridge_delivery_delay_seconds Arrival to delivery of "
	    "each recipient delivered (delay=).\n"
	    "# TYPE mxbridge_delivery_delay_seconds histogram\n"
	    "mxbridge_delivery_delay_seconds_bucket{le=\"0.1\"} 2\n"
	    "mxbridge_delivery_delay_seconds_bucket{le=\"+Inf\"} 3\n"
	    "mxbridge_delivery_delay_seconds_sum 1.5\n"
	    "mxbridge_delivery_delay_seconds_count 3\n"
	    "# HELP mxbridge_worker_w mxbridgectl stats worker.I.w.\n"
	    "# TYPE mxbridge_worker_w histogram\n"
	    "mxbridge_worker_w_bucket{worker=\"1\",le=\"1\"} 2\n"
	    "mxbridge_worker_w_sum{worker=\"1\"} 0.25\n"
	    "mxbridge_worker_w_count{worker=\"1\"} 2\n";
	struct buf st, out;

	histogram_observe(&h, 5000);		/* on a bound: in it */
	histogram_observe(&h, 250000);
	histogram_observe(&h, 1000000);
	histogram_observe(&h, 3600000000ULL);	/* past the last: +Inf */
	buf_init(&st);
	histogram_stats(&h, "d", &st);
	assert_int_equal(st.len, sizeof(want_stats) - 1);
	assert_memory_equal(st.data, want_stats, st.len);
	buf_append(&st, extra, sizeof(extra) - 1);
	buf_init(&out);
	metrics_expose(st.data, st.len, &out);
	if (out.len != sizeof(want) - 1 ||
	    memcmp(out.data, want, out.len) != 0)
		fail_msg("exposition: \"%.*s\"", (int)out.len, out.data);
	buf_free(&out);
	buf_free(&st);
}

/* the queue's shape (queue_*.Q beside the plain queue_messages: one
 * family), the TLS sessions (the protocol's dots kept), a histogram of
 * counts */
static void
test_metrics_shape(void **state UNUSED)
{
	static const uint64_t bounds[] = { 1, 4, 16 };
	static struct histogram h = HISTOGRAM_COUNTS(bounds);
	static const char want_stats[] =
	    "b.le.1=1\n"
	    "b.le.4=2\n"
	    "b.le.16=3\n"
	    "b.le.+Inf=4\n"
	    "b.sum=125\n"
	    "b.count=4\n";
	static const char stats[] =
	    "queue_messages=3\n"
	    "queue_messages.active=1\n"
	    "queue_messages.deferred=2\n"
	    "queue_oldest_seconds.deferred=75\n"
	    "queue_oldest_seconds.a.b=1\n"		/* one too many */
	    "spool_bytes=4096\n"
	    "tls_sessions.client.TLSv1.3=2\n"
	    "tls_sessions.delivery.TLSv1.2=1\n"
	    "tls_sessions.server.other=1\n"
	    "tls_sessions.client=1\n"			/* a value short */
	    "tls_sessions.client.TLS\"1=1\n"		/* not a word */
	    "queue_messages.hold=0\n";
	static const char want[] =
	    "# HELP mxbridge_queue_messages Messages in the queue; with "
	    "queue=, in that queue (a message in each queue where it has a "
	    "pending recipient).\n"
	    "# TYPE mxbridge_queue_messages gauge\n"
	    "mxbridge_queue_messages 3\n"
	    "mxbridge_queue_messages{queue=\"active\"} 1\n"
	    "mxbridge_queue_messages{queue=\"deferred\"} 2\n"
	    "mxbridge_queue_messages{queue=\"hold\"} 0\n"
	    "# HELP mxbridge_queue_oldest_seconds Age since arrival of the "
	    "oldest message in each queue (0: empty).\n"
	    "# TYPE mxbridge_queue_oldest_seconds gauge\n"
	    "mxbridge_queue_oldest_seconds{queue=\"deferred\"} 75\n"
	    "# HELP mxbridge_spool_bytes Bytes of the queued messages' files "
	    "in the spool.\n"
	    "# TYPE mxbridge_spool_bytes gauge\n"
	    "mxbridge_spool_bytes 4096\n"
	    "# HELP mxbridge_tls_sessions_total TLS sessions established, by "
	    "leg (client: STARTTLS from clients, server: the live relay's "
	    "upstream, delivery) and protocol.\n"
	    "# TYPE mxbridge_tls_sessions_total counter\n"
	    "mxbridge_tls_sessions_total{leg=\"client\",protocol=\"TLSv1.3\"} 2\n"
	    "mxbridge_tls_sessions_total{leg=\"delivery\",protocol=\"TLSv1.2\"} 1\n"
	    "mxbridge_tls_sessions_total{leg=\"server\",protocol=\"other\"} 1\n"
	    "# HELP mxbridge_spool_batch_messages Messages committed by each "
	    "spool batch (one group commit).\n"
	    "# TYPE mxbridge_spool_batch_messages histogram\n"
	    "mxbridge_spool_batch_messages_bucket{le=\"1\"} 1\n"
	    "mxbridge_spool_batch_messages_bucket{le=\"4\"} 2\n"
	    "mxbridge_spool_batch_messages_bucket{le=\"16\"} 3\n"
	    "mxbridge_spool_batch_messages_bucket{le=\"+Inf\"} 4\n"
	    "mxbridge_spool_batch_messages_sum 125\n"
	    "mxbridge_spool_batch_messages_count 4\n";
	struct buf st;

	histogram_observe(&h, 1);		/* on a bound: in it */
	histogram_observe(&h, 3);
	histogram_observe(&h, 16);
	histogram_observe(&h, 105);		/* past the last: +Inf */
	buf_init(&st);
	histogram_stats(&h, "b", &st);
	assert_int_equal(st.len, sizeof(want_stats) - 1);
	assert_memory_equal(st.data, want_stats, st.len);
	buf_reset(&st);
	buf_append(&st, stats, sizeof(stats) - 1);
	histogram_stats(&h, "spool_batch_messages", &st);
	expose_is(st.data, st.len, want);
	buf_free(&st);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_answer_parse),
		cmocka_unit_test(test_pidfile_held),
		cmocka_unit_test(test_pidfile_stale),
		cmocka_unit_test(test_pidfile_error),
		cmocka_unit_test(test_sandbox),
		cmocka_unit_test(test_user_lookup),
		cmocka_unit_test(test_metrics_request),
		cmocka_unit_test(test_metrics_request_huge),
		cmocka_unit_test(test_metrics_expose),
		cmocka_unit_test(test_metrics_labels),
		cmocka_unit_test(test_metrics_histogram),
		cmocka_unit_test(test_metrics_shape),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
