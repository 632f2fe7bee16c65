/*
 * mxbridge.c - the daemon's entry point: flags, the configuration
 * snapshot, the pid file (daemon/pidfile.c), the change to the
 * configured user and the sandbox (daemon/priv.c), signals (SIGHUP
 * reload, SIGTERM graceful stop)
 * and the daemon's event loop: the MTA, the control socket and the
 * process part of every module run on it; the worker threads
 * (daemon/worker.c) run the listeners, queues and sessions.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "../common/addr.h"
#include "../common/log.h"
#include "../common/xmalloc.h"
#include "../mta/mta.h"
#include "../nfq/nfq.h"
#include "../policy/policy.h"
#include "../proxy/proxy.h"
#include "control.h"
#include "metrics.h"
#include "module.h"
#include "pidfile.h"
#include "priv.h"
#include "sdnotify.h"
#include "worker.h"

/* modules in start order; stopped in reverse */
static const struct module *const modules[] = {
	&mta_module,
	&proxy_module,
	&nfq_module,
	NULL
};

static uv_loop_t	*loop;
static uv_signal_t	 sig_term, sig_int, sig_hup;
static uv_timer_t	 drain_timer;
static uv_prepare_t	 log_prepare;	/* writes the lines of a loop turn */
static uint64_t		 start_time;
static uint64_t		 drain_deadline;
static int		 stopping;
static unsigned		 nworkers = 1;	/* "workers", fixed at start */
static char		*pidfile;
static int		 pidfd = -1;	/* locked for the daemon's life */

static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr, "usage: mxbridge [-dnvV] [-f file]\n");
	exit(1);
}

/* busy_sessions - sessions still open in every module */
static unsigned
busy_sessions(void)
{
	unsigned n = 0;
	size_t i;

	for (i = 0; modules[i] != NULL; i++)
		if (modules[i]->busy != NULL)
			n += modules[i]->busy();
	return n;
}

/* status - the control command "status" */
static int
cmd_status(int argc, char **argv, struct buf *out)
{
	struct policy *p = policy_current();

	buf_printf(out, "version=%s\n", MXB_VERSION);
	buf_printf(out, "pid=%ld\n", (long)getpid());
	buf_printf(out, "uptime=%llu\n",
	    (unsigned long long)((uv_now(loop) - start_time) / 1000));
	buf_printf(out, "sessions=%u\n", busy_sessions());
	buf_printf(out, "workers=%u\n", nworkers);
	buf_printf(out, "config=%s\n", p->path);
	buf_printf(out, "state=%s\n", stopping ? "stopping" : "running");
	return 0;
}

/* stats_workers - the "stats" line before every module's: how many
 * workers the worker.I lines count */
static void
stats_workers(struct buf *out)
{
	buf_printf(out, "workers=%u\n", nworkers);
}

static void
walk_close(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* finish - every session is done (or the deadline passed): close down */
static void
finish(void)
{
	size_t i, n;

	/* the workers first: their sessions may still hand mail to the MTA */
	workers_stop();
	for (n = 0; modules[n] != NULL; n++)
		;
	for (i = n; i > 0; i--)
		if (modules[i - 1]->stop != NULL)
			modules[i - 1]->stop();
	metrics_stop();
	control_stop();
	uv_timer_stop(&drain_timer);
	uv_walk(loop, walk_close, NULL);
}

static void
drain_cb(uv_timer_t *t)
{
	unsigned busy = busy_sessions();

	if (busy == 0) {
		log_info("shutdown: all sessions finished");
		finish();
	} else if (uv_now(loop) >= drain_deadline) {
		log_warnx("shutdown: deadline reached, closing sessions=%u",
		    busy);
		finish();
	}
}

static void
on_term(uv_signal_t *s, int signum)
{
	struct policy *p = policy_current();
	size_t i;

	if (stopping)
		return;
	stopping = 1;
	sdnotify("STOPPING=1");
	log_info("shutdown: signal=%d grace=%us sessions=%u", signum,
	    p->shutdown_grace, busy_sessions());
	for (i = 0; modules[i] != NULL; i++)
		if (modules[i]->shutdown != NULL)
			modules[i]->shutdown();
	workers_shutdown();
	drain_deadline = uv_now(loop) + (uint64_t)p->shutdown_grace * 1000;
	uv_timer_start(&drain_timer, drain_cb, 0, 100);
}

/*
 * Reload: the file is parsed on libuv's thread pool (a name in it may
 * take getaddrinfo seconds, and this loop runs the MTA), the snapshot
 * installed back here.  One parse at a time: what asks meanwhile (a
 * SIGHUP, a control "reload") is answered by the next parse, which
 * starts when this one ends, so every answer reflects the file as it
 * was after the request.
 */
#define RELOAD_MAXWAIT	16

struct reload_job {
	uv_work_t		 req;
	char			*path;
	struct policy		*p;	/* parsed, or NULL and err */
	char			 err[512];
	struct control_pending	*wait[RELOAD_MAXWAIT];	/* its answers */
	size_t			 nwait;
};

static struct reload_job	*reload_job;		/* parsing now */
static int			 reload_again;		/* asked since */
static struct control_pending	*reload_next[RELOAD_MAXWAIT];
static size_t			 reload_nnext;

static void	reload_start(void);

/* metrics_changed - "metrics listen" differs between a and b */
static int
metrics_changed(const struct policy *a, const struct policy *b)
{
	const struct sockaddr *x = (const struct sockaddr *)&a->metrics_addr;
	const struct sockaddr *y = (const struct sockaddr *)&b->metrics_addr;

	if (a->metrics != b->metrics)
		return 1;
	return a->metrics && (!addr_equal_ip(x, y) ||
	    addr_port(x) != addr_port(y));
}

/* reload_install - take p (its reference) as the current snapshot, or
 * refuse it with err; 0 or -1 */
static int
reload_install(struct policy *p, char *err, size_t errlen)
{
	struct policy *old = policy_current();
	size_t i;

	/* the loops, listeners and queues exist once; only a restart moves
	 * them (auto and the number of cores are the same thing) */
	if (policy_workers(p) != nworkers) {
		snprintf(err, errlen, "workers changed (%u to %u): the number "
		    "of worker loops needs a restart", nworkers,
		    policy_workers(p));
		log_warnx("reload refused, keeping the running configuration: %s",
		    err);
		policy_unref(p);
		return -1;
	}
	if (priv_reload_check(old, p, err, errlen) == -1) {
		log_warnx("reload refused, keeping the running configuration: %s",
		    err);
		policy_unref(p);
		return -1;
	}
	if (strcmp(p->user, old->user) != 0)
		log_warnx("reload: user changes need a restart; the daemon "
		    "stays user %s", old->user);
	if (strcmp(p->control, old->control) != 0 ||
	    strcmp(p->spool, old->spool) != 0 ||
	    p->control_gid != old->control_gid)
		log_warnx("reload: control socket, its group and spool changes "
		    "need a restart; keeping the old ones");
	if (metrics_changed(old, p))
		log_warnx("reload: metrics listener changes need a restart; "
		    "keeping the old one");
	log_setverbose(p->log_verbose > log_getverbose() ? p->log_verbose :
	    log_getverbose());
	policy_set_current(p);
	for (i = 0; modules[i] != NULL; i++)
		if (modules[i]->reload != NULL)
			modules[i]->reload();
	workers_reload(p);
	log_info("reload: configuration=%s workers=%u", p->path, nworkers);
	return 0;
}

/* reload_work - on a pool thread: parse (and resolve) the file */
static void
reload_work(uv_work_t *req)
{
	struct reload_job *j = req->data;

	j->p = policy_load(j->path, j->err, sizeof(j->err));
}

/* reload_done - back on this loop: install or refuse, answer, go on */
static void
reload_done(uv_work_t *req, int status)
{
	struct reload_job *j = req->data;
	char text[640];
	size_t i;
	int rc = -1;

	reload_job = NULL;
	if (stopping) {
		policy_unref(j->p);
		snprintf(j->err, sizeof(j->err), "the daemon is stopping");
	} else if (j->p == NULL)
		log_warnx("reload refused, keeping the running configuration: %s",
		    j->err);
	else
		rc = reload_install(j->p, j->err, sizeof(j->err));
	if (rc == 0)
		snprintf(text, sizeof(text), "configuration reloaded\n");
	else
		snprintf(text, sizeof(text), "reload refused: %s\n", j->err);
	if (!stopping)
		sdnotify("READY=1");
	for (i = 0; i < j->nwait; i++)
		control_pending_done(j->wait[i], rc, text);
	free(j->path);
	free(j);
	if ((reload_again || reload_nnext > 0) && !stopping)
		reload_start();
	else {
		for (i = 0; i < reload_nnext; i++)
			control_pending_done(reload_next[i], -1,
			    "reload refused: the daemon is stopping\n");
		reload_nnext = 0;
	}
}

/* reload_start - parse again now, for what asked so far */
static void
reload_start(void)
{
	struct reload_job *j = xcalloc(1, sizeof(*j));

	j->path = xstrdup(policy_current()->path);
	memcpy(j->wait, reload_next, reload_nnext * sizeof(reload_next[0]));
	j->nwait = reload_nnext;
	reload_nnext = 0;
	reload_again = 0;
	j->req.data = j;
	reload_job = j;
	sdnotify("RELOADING=1");
	log_info("reload: reading configuration=%s", j->path);
	if (uv_queue_work(loop, &j->req, reload_work, reload_done) != 0) {
		/* cannot happen with a valid loop; parse here rather than not */
		reload_work(&j->req);
		reload_done(&j->req, 0);
	}
}

/* reload_ask - a reload is wanted; pending (or NULL) gets its answer */
static void
reload_ask(struct control_pending *pending)
{
	if (pending != NULL) {
		if (reload_nnext == RELOAD_MAXWAIT) {
			control_pending_done(pending, -1, "reload refused: "
			    "too many reloads waiting, try again\n");
			return;
		}
		reload_next[reload_nnext++] = pending;
	} else
		reload_again = 1;
	if (reload_job == NULL)
		reload_start();
}

static void
on_hup(uv_signal_t *s, int signum)
{
	reload_ask(NULL);
}

/* cmd_reload - the control command "reload", answered after the parse */
static void
cmd_reload(int argc, char **argv, struct control_pending *pending)
{
	reload_ask(pending);
}

static void
daemonize(void)
{
	int fd;

	switch (fork()) {
	case -1:
		fatal("fork");
	case 0:
		break;
	default:
		_exit(0);
	}
	if (setsid() == -1)
		fatal("setsid");
	if (chdir("/") == -1)
		fatal("chdir /");
	if ((fd = open("/dev/null", O_RDWR)) != -1) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
}

static void
start_signals(void)
{
	signal(SIGPIPE, SIG_IGN);
	uv_signal_init(loop, &sig_term);
	uv_signal_init(loop, &sig_int);
	uv_signal_init(loop, &sig_hup);
	uv_signal_start(&sig_term, on_term, SIGTERM);
	uv_signal_start(&sig_int, on_term, SIGINT);
	uv_signal_start(&sig_hup, on_hup, SIGHUP);
	uv_timer_init(loop, &drain_timer);
}

static void
log_prepare_cb(uv_prepare_t *h)
{
	log_flush();
}

/* start_logflush - one write of the held log lines per loop turn */
static void
start_logflush(void)
{
	uv_prepare_init(loop, &log_prepare);
	uv_prepare_start(&log_prepare, log_prepare_cb);
	uv_unref((uv_handle_t *)&log_prepare);
	log_hold();
}

/* start_modules - the process parts on this loop, then the workers */
static int
start_modules(void)
{
	size_t i;

	for (i = 0; modules[i] != NULL; i++) {
		if (modules[i]->start(loop, nworkers) == -1) {
			log_warnx("module %s failed to start", modules[i]->name);
			return -1;
		}
	}
	return workers_start(nworkers, modules);
}

int
main(int argc, char *argv[])
{
	const char *conf = POLICY_DEFAULT_PATH;
	struct policy *p;
	char err[512];
	int ch, checkonly = 0, foreground = 0, verbose = 0;
	uid_t uid;
	gid_t gid;

	while ((ch = getopt(argc, argv, "df:nvV")) != -1) {
		switch (ch) {
		case 'd': foreground = 1; break;
		case 'f': conf = optarg; break;
		case 'n': checkonly = 1; break;
		case 'v': verbose++; break;
		case 'V': printf("mxbridge %s\n", MXB_VERSION); return 0;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	log_init("mxbridge", 1, verbose);
	if ((p = policy_load(conf, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	nworkers = policy_workers(p);
	if (priv_lookup(p, &uid, &gid, err, sizeof(err)) == -1) {
		fprintf(stderr, "%s\n", err);
		policy_unref(p);
		return 1;
	}
	if (checkonly) {
		printf("configuration OK\n");
		policy_unref(p);
		return 0;
	}
	if (p->log_verbose > verbose)
		verbose = p->log_verbose;
	policy_set_current(p);
	/* locked before the fork: a refusal reaches stderr and exit status */
	if ((pidfd = pidfile_lock(p->pidfile, err, sizeof(err))) == -1) {
		log_warnx("%s", err);
		policy_set_current(NULL);
		return 1;
	}
	pidfile = xstrdup(p->pidfile);
	if (!foreground)
		daemonize();
	log_init("mxbridge", foreground, verbose);

	loop = uv_default_loop();
	start_time = uv_now(loop);
	start_signals();
	start_logflush();
	if (pidfile_write(pidfd, getpid()) == -1) {
		log_warn("pidfile %s", pidfile);
		goto fail;
	}
	if (control_start(loop, p->control, p->control_gid) == -1)
		goto fail;
	/* bound as root, so a port below 1024 needs no capability kept */
	if (p->metrics && metrics_start(loop,
	    (const struct sockaddr *)&p->metrics_addr) == -1)
		goto fail;
	sdnotify_open();
	/* what needs root is open: the rest runs as the user, sandboxed,
	 * from here on, every thread the workers and libuv make included */
	if (priv_drop(p, err, sizeof(err)) == -1 ||
	    priv_sandbox(err, sizeof(err)) == -1) {
		log_warnx("%s", err);
		goto fail;
	}
	control_register("status", cmd_status);
	control_register_later("reload", cmd_reload);
	control_register_stats(stats_workers);
	if (start_modules() == -1)
		goto fail;
	log_info("started: version=%s config=%s pid=%ld workers=%u",
	    MXB_VERSION, p->path, (long)getpid(), nworkers);
	snprintf(err, sizeof(err), "READY=1\nMAINPID=%ld", (long)getpid());
	sdnotify(err);

	uv_run(loop, UV_RUN_DEFAULT);
	uv_loop_close(loop);
	pidfile_release(pidfd, pidfile);
	free(pidfile);
	log_info("stopped");
	policy_set_current(NULL);
	return 0;
fail:
	finish();
	uv_run(loop, UV_RUN_DEFAULT);
	pidfile_release(pidfd, pidfile);
	free(pidfile);
	policy_set_current(NULL);
	return 1;
}
