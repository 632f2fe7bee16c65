/*
 * worker.c - the worker threads.  Owns each worker's thread, loop, log
 * flush and command channel: the daemon's thread starts N workers, each
 * runs the worker part of every module (its listeners, NFQUEUE queue and
 * sessions) on a uv loop of its own, and the daemon reaches them only by
 * message (reload with the new snapshot, shutdown, stop), posted under
 * the worker's lock and woken with its uv_async.  A worker's snapshot is
 * its own (policy_thread_set), replaced by the reload message: a reload
 * on the daemon's thread never frees one under a worker's callback.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include <uv.h>

#include "../common/log.h"
#include "../common/xmalloc.h"
#include "../policy/policy.h"
#include "worker.h"

enum worker_cmd {
	WORKER_RELOAD	= 0x01,
	WORKER_SHUTDOWN	= 0x02,
	WORKER_STOP	= 0x04,
};

struct worker {
	unsigned		 idx;
	uv_thread_t		 thread;
	int			 running;	/* the thread was made */
	uv_loop_t		 loop;
	uv_async_t		 wake;		/* commands are waiting */
	uv_prepare_t		 logflush;	/* one write per loop turn */
	uv_sem_t		 started;	/* start_rc is set */
	int			 start_rc;
	pthread_mutex_t		 mtx;		/* cmds, newpol */
	unsigned		 cmds;		/* enum worker_cmd bits */
	struct policy		*newpol;	/* referenced, for RELOAD */
	struct policy		*startpol;	/* referenced, for the start */
};

static const struct module *const *worker_mods;
static struct worker	*workers;
static unsigned		 nworkers;

static void
worker_logflush_cb(uv_prepare_t *h)
{
	log_flush();
}

static void
worker_walk_close(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* worker_stop_here - on w's thread: every module's worker part closes,
 * then whatever handle is left, so that the loop ends */
static void
worker_stop_here(struct worker *w)
{
	size_t i, n;

	for (n = 0; worker_mods[n] != NULL; n++)
		;
	for (i = n; i > 0; i--)
		if (worker_mods[i - 1]->wstop != NULL)
			worker_mods[i - 1]->wstop(w->idx);
	log_flush();
	uv_walk(&w->loop, worker_walk_close, NULL);
}

/* worker_wake_cb - on w's thread: run the commands the daemon posted */
static void
worker_wake_cb(uv_async_t *h)
{
	struct worker *w = h->data;
	struct policy *pol;
	unsigned cmds;
	size_t i;

	pthread_mutex_lock(&w->mtx);
	cmds = w->cmds;
	w->cmds = 0;
	pol = w->newpol;
	w->newpol = NULL;
	pthread_mutex_unlock(&w->mtx);
	if ((cmds & WORKER_RELOAD) && pol != NULL) {
		policy_thread_set(pol);
		pol = NULL;
		for (i = 0; worker_mods[i] != NULL; i++)
			if (worker_mods[i]->wreload != NULL)
				worker_mods[i]->wreload(w->idx);
	}
	policy_unref(pol);
	if (cmds & WORKER_SHUTDOWN)
		for (i = 0; worker_mods[i] != NULL; i++)
			if (worker_mods[i]->wshutdown != NULL)
				worker_mods[i]->wshutdown(w->idx);
	if (cmds & WORKER_STOP)
		worker_stop_here(w);
}

/* worker_main - a worker's thread: start its parts, run its loop */
static void
worker_main(void *arg)
{
	struct worker *w = arg;
	sigset_t set;
	size_t i;
	int rc = 0;

	/* signals are the daemon's thread's (libuv's handlers run there) */
	sigfillset(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	log_hold();
	policy_thread_set(w->startpol);
	w->startpol = NULL;
	for (i = 0; worker_mods[i] != NULL && rc == 0; i++)
		if (worker_mods[i]->wstart != NULL &&
		    (rc = worker_mods[i]->wstart(w->idx, &w->loop)) == -1)
			log_warnx("worker=%u: module %s failed to start",
			    w->idx, worker_mods[i]->name);
	if (rc == 0)
		log_info("worker=%u started", w->idx);
	log_flush();
	w->start_rc = rc;
	uv_sem_post(&w->started);
	if (rc == -1)
		worker_stop_here(w);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	log_flush();
	policy_thread_set(NULL);
}

/* worker_post - on the daemon's thread: cmds (and pol, referenced) to w */
static void
worker_post(struct worker *w, unsigned cmds, struct policy *pol)
{
	struct policy *old = NULL;

	pthread_mutex_lock(&w->mtx);
	w->cmds |= cmds;
	if (pol != NULL) {
		old = w->newpol;
		w->newpol = pol;
	}
	pthread_mutex_unlock(&w->mtx);
	policy_unref(old);	/* a reload it never saw */
	uv_async_send(&w->wake);
}

/*
 * workers_start - n workers running mods' worker parts; each is started
 * (its listeners and queue open) or has failed before this returns.
 * 0, or -1 (logged) when one could not start: then workers_stop() ends
 * those that did.
 */
int
workers_start(unsigned n, const struct module *const *mods)
{
	struct worker *w;
	unsigned i;
	int rc = 0;

	worker_mods = mods;
	workers = xcalloc(n, sizeof(*workers));
	nworkers = n;
	for (i = 0; i < n; i++) {
		w = &workers[i];
		w->idx = i;
		pthread_mutex_init(&w->mtx, NULL);
		if (uv_loop_init(&w->loop) != 0)
			fatalx("worker=%u: uv_loop_init", i);
		uv_async_init(&w->loop, &w->wake, worker_wake_cb);
		w->wake.data = w;
		uv_prepare_init(&w->loop, &w->logflush);
		uv_prepare_start(&w->logflush, worker_logflush_cb);
		uv_unref((uv_handle_t *)&w->logflush);
		uv_sem_init(&w->started, 0);
		w->startpol = policy_ref(policy_current());
		if (uv_thread_create(&w->thread, worker_main, w) != 0) {
			log_warnx("worker=%u: cannot create its thread", i);
			policy_unref(w->startpol);
			w->startpol = NULL;
			uv_close((uv_handle_t *)&w->wake, NULL);
			uv_close((uv_handle_t *)&w->logflush, NULL);
			uv_run(&w->loop, UV_RUN_DEFAULT);
			rc = -1;
			break;
		}
		w->running = 1;
		/* one at a time: a failed start stops the rest early */
		uv_sem_wait(&w->started);
		if (w->start_rc == -1) {
			rc = -1;
			break;
		}
	}
	return rc;
}

unsigned
workers_count(void)
{
	return nworkers;
}

/* workers_reload - on the daemon's thread: pol is current, tell each */
void
workers_reload(struct policy *pol)
{
	unsigned i;

	for (i = 0; i < nworkers; i++)
		if (workers[i].running)
			worker_post(&workers[i], WORKER_RELOAD, policy_ref(pol));
}

/* workers_shutdown - every worker stops taking new work */
void
workers_shutdown(void)
{
	unsigned i;

	for (i = 0; i < nworkers; i++)
		if (workers[i].running)
			worker_post(&workers[i], WORKER_SHUTDOWN, NULL);
}

/*
 * workers_stop - every worker closes what it has and its thread ends;
 * returns when all have (their loops hold no blocking work: a session's
 * commit is answered by id, and one that is gone is dropped)
 */
void
workers_stop(void)
{
	struct worker *w;
	unsigned i;

	for (i = 0; i < nworkers; i++)
		if (workers[i].running && workers[i].start_rc == 0)
			worker_post(&workers[i], WORKER_STOP, NULL);
	for (i = 0; i < nworkers; i++) {
		w = &workers[i];
		if (!w->running)
			continue;
		uv_thread_join(&w->thread);
		w->running = 0;
		if (uv_loop_close(&w->loop) != 0)
			log_warnx("worker=%u: loop closed with handles left",
			    i);
		uv_sem_destroy(&w->started);
		policy_unref(w->newpol);
		w->newpol = NULL;
	}
}
