/*
 * mta.c - the built-in MTA as a daemon module, and the receiving side of
 * its contract with the proxy: a message being received (struct mta_msg)
 * collects the envelope and the body, then is committed to the spool and
 * handed to the scheduler.  Also the module's counters and host name.
 *
 * The MTA runs on the daemon's thread.  Worker threads build a message
 * on their own thread (mta_msg_new, _add_rcpt, _write: nothing shared
 * but the id counter) and hand it over through the front door: the
 * message goes into the inbox (under door_mtx) with the worker's door
 * and a ticket, the daemon's loop commits it (group commit serves every
 * worker's sessions), and the answer goes back by ticket into the
 * door's outbox, read on the worker's loop.  No pointer of one thread's
 * object is called back on another.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "../common/addr.h"
#include "../common/hash.h"
#include "../common/log.h"
#include "../common/smtp.h"
#include "../common/xmalloc.h"
#include "mta_local.h"

/*
 * A body bigger than MTA_SPILL goes to tmp/ID.body, written on the
 * receiving thread's loop with libuv's file requests (the thread pool),
 * never with a write() on the loop: a slow disk holds that message's
 * session (busy: its input waits), not every session of the worker.
 * One request at a time, in order: spill_step() starts each request and
 * the request's callback records how it ended; nothing else moves sp.
 */
enum spill_state {
	SP_MEMORY = 0,	/* all of the body in memory (body) */
	SP_OPENING,	/* the spill file being made */
	SP_IDLE,	/* the file open, no write in flight */
	SP_WRITING,	/* out being written */
	SP_FAILED	/* a spill request failed: the message cannot be
			   queued (error), what arrives is counted only */
};

#define MTA_SPILL_CHUNK	(256 * 1024)	/* bytes gathered per write */
#define MTA_SPILL_HIWAT	(1024 * 1024)	/* waiting bytes: busy */

/* what to do once every byte is in the spill file */
enum msg_finish { FIN_NONE = 0, FIN_SUBMIT, FIN_COMMIT };

/* one message being received from a proxy session */
struct mta_msg {
	struct mta_env	*env;
	uv_loop_t	*loop;		/* the receiving thread's */
	struct buf	 body;		/* in memory: the body up to
					   MTA_SPILL, then what waits to be
					   spilled */
	enum spill_state sp;
	uv_fs_t		 req;		/* the spill request in flight */
	struct buf	 out;		/* the bytes it writes */
	uint64_t	 spilled;	/* bytes in the file */
	int		 spillfd;	/* tmp/ID.body, or -1 */
	char		*spillpath;
	int		 freeing;	/* freed: the callback frees it */
	enum msg_finish	 finish;	/* asked while bytes waited */
	struct mta_request *fin_req;	/* FIN_SUBMIT */
	mta_commit_cb	 fin_cb;	/* FIN_COMMIT */
	void		*fin_arg;
	struct buf	 head;		/* an edited header (milters) */
	uint64_t	 headskip;	/* ... standing for this many bytes
					   at the body's start */
	int		 edited;
	int		 replaced;	/* head is all of it */
	void		(*wake)(void *);	/* busy no more */
	void		*wake_arg;
	uint64_t	 len;
	uint64_t	 sum;
	int		 error;		/* a write failed: commit fails */
};

/* what a commit waits with */
struct mta_commit {
	struct mta_env	*env;
	mta_commit_cb	 cb;
	void		*arg;
};

/*
 * One worker's answer channel: made and closed on the worker's thread,
 * written by the MTA's.  Freed when the worker has closed it and no
 * request in the inbox or the spool still names it (refs).
 */
struct mta_door {
	uv_async_t		 async;		/* the worker's loop */
	pthread_mutex_t		 mtx;		/* outbox, closed */
	TAILQ_HEAD(, mta_answer) outbox;
	int			 closed;	/* no more answers */
	atomic_uint		 refs;		/* worker's + requests' */
	mta_door_cb		 cb;
	void			*arg;
};

/* an answer on its way to a worker */
struct mta_answer {
	uint64_t		 ticket;
	int			 status;
	char			 text[64];	/* queue id or reason */
	TAILQ_ENTRY(mta_answer)	 entry;
};

/* a message handed in through the door */
struct mta_request {
	struct mta_msg		*msg;
	struct mta_door		*door;
	uint64_t		 ticket;
	TAILQ_ENTRY(mta_request) entry;
};

struct mta_stats	 mta_stats;
static uv_loop_t	*mta_loop;
/* read by the workers (mta_can_accept, the door), set on this thread */
static atomic_int	 mta_started;
static atomic_int	 mta_stopping;
/* the inbox: shared, under inbox_mtx; inbox_async wakes the MTA's loop */
static pthread_mutex_t	 inbox_mtx = PTHREAD_MUTEX_INITIALIZER;
static TAILQ_HEAD(, mta_request) inbox = TAILQ_HEAD_INITIALIZER(inbox);
static uv_async_t	 inbox_async;
static int		 inbox_open;	/* under inbox_mtx */

const char *
mta_hostname(void)
{
	return policy_hostname(policy_current());
}

int
mta_shutting_down(void)
{
	return mta_stopping;
}

int
mta_can_accept(void)
{
	struct policy *p = policy_current();

	if (!mta_started || mta_stopping || p == NULL)
		return -1;
	return mta_spool_free_ok(p->queue.min_free) ? 0 : -1;
}

struct mta_msg *
mta_msg_new(const struct mta_info *info)
{
	struct mta_msg *msg;
	struct mta_env *env;

	msg = xcalloc(1, sizeof(*msg));
	msg->loop = info->loop;
	msg->spillfd = -1;
	msg->sum = HASH_FNV_INIT;
	buf_init(&msg->body);
	buf_init(&msg->head);
	buf_init(&msg->out);
	msg->env = env = mta_env_new();
	mta_id_make(env->id);
	env->arrival_ms = mta_now_ms();
	env->arrival = (time_t)(env->arrival_ms / 1000);
	env->session = info->session_id;
	env->client = info->client;
	env->orig_dst = info->orig_dst;
	env->dir = info->dir;
	env->helo = info->helo != NULL ? xstrdup(info->helo) : NULL;
	env->tls = info->tls != NULL ? xstrdup(info->tls) : NULL;
	env->auth = info->auth != NULL ? xstrdup(info->auth) : NULL;
	free(env->sender);
	env->sender = xstrdup(info->sender != NULL ? info->sender : "");
	env->envid = info->envid != NULL ? xstrdup(info->envid) : NULL;
	env->ret = info->ret;
	env->size = info->size;
	env->body8 = info->body_8bit;
	env->smtputf8 = info->smtputf8;
	return msg;
}

void
mta_msg_add_rcpt(struct mta_msg *msg, const char *rcpt, const char *orcpt,
    unsigned notify, enum policy_route route)
{
	mta_rcpt_add(msg->env, rcpt, orcpt, notify, route);
}

/*
 * mta_msg_hold - queue msg on hold (a quarantine): the hold is in the
 * message file that the commit makes durable, and no attempt is made
 * until an administrator releases it.  The reason is kept to MTA_DIAGLEN
 * bytes.  On the receiving thread, before the commit or the submit.
 */
void
mta_msg_hold(struct mta_msg *msg, const char *reason)
{
	struct mta_env *env = msg->env;

	env->held = 1;
	env->hold_since = env->arrival;
	free(env->hold_reason);
	env->hold_reason = xstrndup(reason != NULL && *reason != '\0' ?
	    reason : "quarantined", MTA_DIAGLEN);
}

static void	spill_step(struct mta_msg *);
static void	msg_free(struct mta_msg *);
static void	msg_finished(struct mta_msg *);

/*
 * spill_done - a spill request came back: move on, and tell the session
 * it may send more when the waiting bytes are below the mark (a wake
 * that finds it not waiting does nothing).  Never from mta_msg_write,
 * which the session itself calls.  A message finishing or freed is not
 * the session's any more: no wake, and no touching it after the step.
 */
static void
spill_done(struct mta_msg *msg)
{
	void (*wake)(void *) = msg->wake;
	void *arg = msg->wake_arg;

	if (msg->finish != FIN_NONE || msg->freeing || wake == NULL) {
		spill_step(msg);
		return;
	}
	spill_step(msg);
	if (!mta_msg_busy(msg))
		wake(arg);
}

/* spill_opened - tmp/ID.body made (or not) */
static void
spill_opened(uv_fs_t *req)
{
	struct mta_msg *msg = req->data;

	if (req->result < 0) {
		log_warnx("msgid=%s spool: open %s: %s", msg->env->id,
		    msg->spillpath, uv_strerror((int)req->result));
		msg->sp = SP_FAILED;
		msg->error = 1;
	} else {
		msg->spillfd = (int)req->result;
		msg->sp = SP_IDLE;
	}
	uv_fs_req_cleanup(req);
	spill_done(msg);
}

/* spill_wrote - a write of out done (maybe in part) */
static void
spill_wrote(uv_fs_t *req)
{
	struct mta_msg *msg = req->data;

	if (req->result < 0) {
		log_warnx("msgid=%s spool: write %s: %s", msg->env->id,
		    msg->spillpath, uv_strerror((int)req->result));
		msg->sp = SP_FAILED;
		msg->error = 1;
		buf_reset(&msg->out);
	} else {
		msg->spilled += (uint64_t)req->result;
		buf_consume(&msg->out, (size_t)req->result);
		msg->sp = SP_IDLE;
	}
	uv_fs_req_cleanup(req);
	spill_done(msg);
}

/*
 * spill_step - the one place the spill moves: make the file once the
 * body outgrows memory, write what waits (a chunk at a time, all of it
 * when the message is finishing), and when nothing waits run the finish
 * that was asked; a message freed meanwhile is freed now (the session
 * is woken by spill_done, never from here: mta_msg_write calls this).
 */
static void
spill_step(struct mta_msg *msg)
{
	char path[PATH_MAX], name[64];
	uv_buf_t b;
	int rc;

	if (msg->freeing) {
		if (msg->sp != SP_OPENING && msg->sp != SP_WRITING)
			msg_free(msg);
		return;
	}
	switch (msg->sp) {
	case SP_MEMORY:
		if (msg->body.len <= MTA_SPILL || msg->finish != FIN_NONE)
			break;
		snprintf(name, sizeof(name), "%s.body", msg->env->id);
		if (mta_spool_path(path, sizeof(path), "tmp", name) == -1) {
			msg->sp = SP_FAILED;
			msg->error = 1;
			break;
		}
		msg->spillpath = xstrdup(path);
		msg->sp = SP_OPENING;
		msg->req.data = msg;
		if ((rc = uv_fs_open(msg->loop, &msg->req, msg->spillpath,
		    O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600,
		    spill_opened)) < 0) {
			log_warnx("msgid=%s spool: open %s: %s", msg->env->id,
			    msg->spillpath, uv_strerror(rc));
			msg->sp = SP_FAILED;
			msg->error = 1;
		}
		return;
	case SP_OPENING:
	case SP_WRITING:
		return;
	case SP_IDLE:
		if (buf_avail(&msg->out) == 0) {
			if (msg->body.len == 0 || (msg->body.len <
			    MTA_SPILL_CHUNK && msg->finish == FIN_NONE))
				break;
			/* swap: body gathers on while out is written */
			struct buf t = msg->out;
			msg->out = msg->body;
			msg->body = t;
			buf_reset(&msg->body);
		}
		b = uv_buf_init((char *)(uintptr_t)buf_head(&msg->out),
		    (unsigned)buf_avail(&msg->out));
		msg->sp = SP_WRITING;
		msg->req.data = msg;
		if ((rc = uv_fs_write(msg->loop, &msg->req, msg->spillfd, &b,
		    1, (int64_t)msg->spilled, spill_wrote)) < 0) {
			log_warnx("msgid=%s spool: write %s: %s", msg->env->id,
			    msg->spillpath, uv_strerror(rc));
			msg->sp = SP_FAILED;
			msg->error = 1;
			break;
		}
		return;
	case SP_FAILED:
		buf_reset(&msg->body);
		break;
	}
	if (msg->finish != FIN_NONE && (msg->sp == SP_MEMORY ||
	    msg->sp == SP_FAILED || (msg->sp == SP_IDLE &&
	    msg->body.len == 0 && buf_avail(&msg->out) == 0)))
		msg_finished(msg);
}

int
mta_msg_busy(const struct mta_msg *msg)
{
	return msg->sp != SP_MEMORY && msg->sp != SP_FAILED &&
	    msg->body.len + buf_avail(&msg->out) >= MTA_SPILL_HIWAT;
}

const char *
mta_msg_id(const struct mta_msg *msg)
{
	return msg->env->id;
}

/*
 * mta_msg_edit_head - the first skip bytes written (the message's header
 * section) are to be replaced by head (CRLF lines): a milter edited the
 * header.  Applied at commit, in memory or by the spool's copy.
 */
void
mta_msg_edit_head(struct mta_msg *msg, uint64_t skip, const void *head,
    size_t len)
{
	buf_reset(&msg->head);
	buf_append(&msg->head, head, len);
	msg->headskip = skip;
	msg->edited = 1;
}

/*
 * mta_msg_replace - every byte written gives way to content: the edit of
 * the header made to cover the whole message (its length known at the
 * commit), so the spill file, if any, is skipped to its end by the same
 * code that applies a header edit.
 */
void
mta_msg_replace(struct mta_msg *msg, struct buf *content)
{
	struct buf t = msg->head;

	msg->head = *content;
	*content = t;
	buf_reset(content);
	msg->edited = 1;
	msg->replaced = 1;
}

void
mta_msg_set_sender(struct mta_msg *msg, const char *sender)
{
	free(msg->env->sender);
	msg->env->sender = xstrdup(sender);
}

unsigned
mta_msg_del_rcpt(struct mta_msg *msg, const char *rcpt)
{
	return mta_rcpt_del(msg->env, rcpt);
}

int
mta_msg_has_rcpt(const struct mta_msg *msg, const char *rcpt)
{
	size_t i;

	for (i = 0; i < msg->env->nrcpt; i++)
		if (strcasecmp(msg->env->rcpt[i].addr, rcpt) == 0)
			return 1;
	return 0;
}

size_t
mta_msg_nrcpt(const struct mta_msg *msg)
{
	return msg->env->nrcpt;
}

void
mta_msg_set_wake(struct mta_msg *msg, void (*wake)(void *), void *arg)
{
	msg->wake = wake;
	msg->wake_arg = arg;
}

int
mta_msg_write(struct mta_msg *msg, const void *p, size_t n)
{
	if (msg->error)
		return -1;
	msg->sum = hash_fnv(msg->sum, p, n);
	msg->len += n;
	buf_append(&msg->body, p, n);
	if ((msg->sp == SP_MEMORY && msg->body.len > MTA_SPILL) ||
	    (msg->sp == SP_IDLE && msg->body.len >= MTA_SPILL_CHUNK))
		spill_step(msg);
	return msg->error ? -1 : 0;
}

/* received - the box's trace header, the only place it is made (the
 * queue sink leaves it to this): kept apart from the body, written
 * first at delivery, in DSNs and by "queue show" */
static void
received(struct mta_env *env)
{
	char ip[ADDR_STRLEN];
	struct smtp_trace t;
	struct buf b;

	addr_fmt_ip((struct sockaddr *)&env->client, ip, sizeof(ip));
	memset(&t, 0, sizeof(t));
	t.helo = env->helo;
	t.ip = ip;
	t.by = mta_hostname();
	t.id = env->id;
	t.tls = env->tls;
	t.rcpt = env->nrcpt == 1 ? env->rcpt[0].addr : NULL;
	t.smtputf8 = env->smtputf8;
	t.auth = env->auth != NULL;
	t.when = env->arrival;
	buf_init(&b);
	smtp_received(&b, &t);
	env->received = xstrndup(b.data, b.len);
	buf_free(&b);
}

/* msg_free - now, or (a spill request in flight) when it comes back */
static void
msg_free(struct mta_msg *msg)
{
	if (msg->sp == SP_OPENING || msg->sp == SP_WRITING) {
		msg->freeing = 1;
		return;
	}
	buf_free(&msg->body);
	buf_free(&msg->out);
	buf_free(&msg->head);
	mta_spool_spill_drop(msg->spillfd, msg->spillpath);
	mta_env_free(msg->env);
	free(msg);
}

void
mta_msg_abort(struct mta_msg *msg)
{
	if (msg == NULL)
		return;
	msg->wake = NULL;
	msg_free(msg);
}

/* commit_done - the spool says the message is (or is not) durable */
static void
commit_done(void *arg, int status, const char *why)
{
	struct mta_commit *c = arg;
	struct mta_env *env = c->env;
	char client[ADDR_STRLEN];

	if (status == 0) {
		mta_stats.received++;
		log_info("msgid=%s session=%llu queued from=<%s> nrcpt=%zu "
		    "size=%llu client=%s", env->id,
		    (unsigned long long)env->session, log_word(env->sender),
		    env->nrcpt,
		    (unsigned long long)env->bodylen,
		    addr_fmt((struct sockaddr *)&env->client, client,
		    sizeof(client)));
		if (env->held)
			log_info("msgid=%s session=%llu held by=ingress "
			    "pending=%zu reason=\"%s\"", env->id,
			    (unsigned long long)env->session, env->nrcpt,
			    log_vis(env->hold_reason));
		c->cb(c->arg, 0, env->id);
		mta_queue_add(env);
	} else {
		c->cb(c->arg, -1, "spool write failed");
		mta_env_free(env);
	}
	free(c);
}

void
mta_msg_commit(struct mta_msg *msg, mta_commit_cb cb, void *arg)
{
	msg->wake = NULL;
	msg->fin_cb = cb;
	msg->fin_arg = arg;
	msg->finish = FIN_COMMIT;
	spill_step(msg);
}

/* edit_in_memory - a body all in memory takes its edited header here */
static void
edit_in_memory(struct mta_msg *msg)
{
	struct buf b;
	uint64_t skip = msg->headskip;

	if (skip > msg->body.len)
		skip = msg->body.len;
	buf_init(&b);
	buf_reserve(&b, msg->head.len + msg->body.len - skip);
	buf_append(&b, msg->head.data, msg->head.len);
	buf_append(&b, msg->body.data + skip, msg->body.len - skip);
	buf_free(&msg->body);
	msg->body = b;
	msg->len = b.len;
	msg->sum = hash_fnv(HASH_FNV_INIT, b.data, b.len);
	buf_free(&msg->head);
}

/* commit_now - every byte is in memory or in the spill file: commit */
static void
commit_now(struct mta_msg *msg, mta_commit_cb cb, void *arg)
{
	struct mta_commit *c;
	const char *why = NULL;

	if (msg->error)
		why = "spool write failed";
	else if (msg->env->nrcpt == 0)
		why = "no recipients";
	else if (!mta_started)
		why = "queue not running";
	if (why != NULL) {
		log_warnx("msgid=%s session=%llu not queued: %s", msg->env->id,
		    (unsigned long long)msg->env->session, why);
		msg_free(msg);
		cb(arg, -1, why);
		return;
	}
	received(msg->env);
	if (msg->replaced)
		msg->headskip = msg->len;
	if (msg->edited && msg->spillfd == -1)
		edit_in_memory(msg);
	msg->env->queued_ms = mta_now_ms();
	msg->env->bodylen = msg->len;
	msg->env->bodysum = msg->sum;
	c = xcalloc(1, sizeof(*c));
	c->env = msg->env;
	c->cb = cb;
	c->arg = arg;
	if (msg->edited && msg->spillfd != -1) {
		/* the spill holds it all: the spool writes the new header,
		 * then the file past the old one, and counts it again */
		buf_free(&msg->body);
		msg->body = msg->head;
		buf_init(&msg->head);
		mta_spool_commit(msg->env, &msg->body, msg->spillfd,
		    msg->spillpath, (int64_t)msg->headskip, commit_done, c);
	} else
		mta_spool_commit(msg->env, &msg->body, msg->spillfd,
		    msg->spillpath, -1, commit_done, c);
	/* the spool owns the env, body and spill file now */
	msg->env = NULL;
	msg->spillfd = -1;
	free(msg->spillpath);
	msg->spillpath = NULL;
	msg_free(msg);
}

static void	submit_now(struct mta_request *);

/* msg_finished - what mta_msg_submit or _commit asked, now it can run */
static void
msg_finished(struct mta_msg *msg)
{
	enum msg_finish f = msg->finish;

	msg->finish = FIN_NONE;
	if (f == FIN_SUBMIT)
		submit_now(msg->fin_req);
	else
		commit_now(msg, msg->fin_cb, msg->fin_arg);
}

/* ------------------------------------------------------ the front door */

static void
door_unref(struct mta_door *d)
{
	struct mta_answer *a;

	if (atomic_fetch_sub_explicit(&d->refs, 1, memory_order_acq_rel) != 1)
		return;
	while ((a = TAILQ_FIRST(&d->outbox)) != NULL) {
		TAILQ_REMOVE(&d->outbox, a, entry);
		free(a);
	}
	pthread_mutex_destroy(&d->mtx);
	free(d);
}

/* door_read - on the worker's loop: hand each answer to its owner */
static void
door_read(uv_async_t *h)
{
	struct mta_door *d = h->data;
	TAILQ_HEAD(, mta_answer) got = TAILQ_HEAD_INITIALIZER(got);
	struct mta_answer *a;

	pthread_mutex_lock(&d->mtx);
	TAILQ_CONCAT(&got, &d->outbox, entry);
	pthread_mutex_unlock(&d->mtx);
	while ((a = TAILQ_FIRST(&got)) != NULL) {
		TAILQ_REMOVE(&got, a, entry);
		d->cb(d->arg, a->ticket, a->status, a->text);
		free(a);
	}
}

/* door_answer - any thread: post ticket's answer to d (dropped if closed) */
static void
door_answer(struct mta_door *d, uint64_t ticket, int status, const char *text)
{
	struct mta_answer *a = xcalloc(1, sizeof(*a));

	a->ticket = ticket;
	a->status = status;
	strncpy(a->text, text, sizeof(a->text) - 1);
	pthread_mutex_lock(&d->mtx);
	if (d->closed) {
		pthread_mutex_unlock(&d->mtx);
		free(a);
		return;
	}
	TAILQ_INSERT_TAIL(&d->outbox, a, entry);
	/* under the lock: the worker cannot close the handle meanwhile */
	uv_async_send(&d->async);
	pthread_mutex_unlock(&d->mtx);
}

struct mta_door *
mta_door_open(uv_loop_t *loop, mta_door_cb cb, void *arg)
{
	struct mta_door *d = xcalloc(1, sizeof(*d));

	pthread_mutex_init(&d->mtx, NULL);
	TAILQ_INIT(&d->outbox);
	atomic_init(&d->refs, 1);
	d->cb = cb;
	d->arg = arg;
	uv_async_init(loop, &d->async, door_read);
	d->async.data = d;
	/* an open door keeps no loop alive */
	uv_unref((uv_handle_t *)&d->async);
	return d;
}

static void
door_close_cb(uv_handle_t *h)
{
	door_unref(h->data);
}

/* mta_door_close - on the worker's thread: no answer is read after this */
void
mta_door_close(struct mta_door *d)
{
	if (d == NULL)
		return;
	pthread_mutex_lock(&d->mtx);
	d->closed = 1;
	pthread_mutex_unlock(&d->mtx);
	uv_close((uv_handle_t *)&d->async, door_close_cb);
}

/* request_done - the commit of a request ended: answer its ticket */
static void
request_done(void *arg, int status, const char *id_or_reason)
{
	struct mta_request *r = arg;

	door_answer(r->door, r->ticket, status, id_or_reason);
	door_unref(r->door);
	free(r);
}

/* inbox_read - on the MTA's loop: commit what the workers handed in */
static void
inbox_read(uv_async_t *h)
{
	TAILQ_HEAD(, mta_request) got = TAILQ_HEAD_INITIALIZER(got);
	struct mta_request *r;

	pthread_mutex_lock(&inbox_mtx);
	TAILQ_CONCAT(&got, &inbox, entry);
	pthread_mutex_unlock(&inbox_mtx);
	while ((r = TAILQ_FIRST(&got)) != NULL) {
		TAILQ_REMOVE(&got, r, entry);
		mta_msg_commit(r->msg, request_done, r);
	}
}

/*
 * mta_msg_submit - any worker thread: commit msg (which the MTA owns from
 * now on); the answer reaches door's callback on the door's loop with
 * ticket: status 0 and the queue id, or -1 and a reason
 */
void
mta_msg_submit(struct mta_msg *msg, struct mta_door *door, uint64_t ticket)
{
	struct mta_request *r = xcalloc(1, sizeof(*r));

	r->msg = msg;
	r->door = door;
	r->ticket = ticket;
	atomic_fetch_add_explicit(&door->refs, 1, memory_order_relaxed);
	/* the last spill writes first, on this thread's loop: the MTA's
	 * thread gets a message with no request in flight */
	msg->wake = NULL;
	msg->fin_req = r;
	msg->finish = FIN_SUBMIT;
	spill_step(msg);
}

/* submit_now - the message is all written: into the inbox */
static void
submit_now(struct mta_request *r)
{
	struct mta_msg *msg = r->msg;

	pthread_mutex_lock(&inbox_mtx);
	if (inbox_open) {
		TAILQ_INSERT_TAIL(&inbox, r, entry);
		uv_async_send(&inbox_async);
		pthread_mutex_unlock(&inbox_mtx);
		return;
	}
	pthread_mutex_unlock(&inbox_mtx);
	log_warnx("msgid=%s session=%llu not queued: queue not running",
	    msg->env->id, (unsigned long long)msg->env->session);
	msg_free(msg);
	request_done(r, -1, "queue not running");
}

/* inbox_close - the MTA stops: what is still in the inbox is refused */
static void
inbox_close(void)
{
	TAILQ_HEAD(, mta_request) got = TAILQ_HEAD_INITIALIZER(got);
	struct mta_request *r;

	pthread_mutex_lock(&inbox_mtx);
	if (!inbox_open) {
		pthread_mutex_unlock(&inbox_mtx);
		return;
	}
	inbox_open = 0;
	TAILQ_CONCAT(&got, &inbox, entry);
	pthread_mutex_unlock(&inbox_mtx);
	uv_close((uv_handle_t *)&inbox_async, NULL);
	while ((r = TAILQ_FIRST(&got)) != NULL) {
		TAILQ_REMOVE(&got, r, entry);
		msg_free(r->msg);
		request_done(r, -1, "queue not running");
	}
}

/*
 * The module
 */

static int
mta_start(uv_loop_t *loop, unsigned nworkers)
{
	struct policy *p = policy_current();
	int n;

	(void)nworkers;
	mta_loop = loop;
	/*
	 * The threadpool runs the spool's batches, DNS resolutions (at most
	 * DNS_MAXINFLIGHT, 16, dns.c) and body reads: slow resolvers must
	 * not take the threads a batch waits for, so 8 more than DNS takes.
	 */
	setenv("UV_THREADPOOL_SIZE", "24", 0);
	if (mta_spool_init(loop, p->spool) == -1)
		return -1;
	mta_queue_init(loop);
	mta_admin_register();
	if ((n = mta_spool_load(mta_queue_add)) == -1)
		return -1;
	uv_async_init(loop, &inbox_async, inbox_read);
	pthread_mutex_lock(&inbox_mtx);
	inbox_open = 1;
	pthread_mutex_unlock(&inbox_mtx);
	mta_started = 1;
	mta_stopping = 0;
	log_info("mta: started spool=%s messages=%d fsync=%s", p->spool, n,
	    p->queue.fsync ? "yes" : "no");
	mta_queue_kick();
	return 0;
}

static void
mta_reload(void)
{
	mta_queue_reload();
}

static void
mta_shutdown(void)
{
	mta_stopping = 1;
	mta_queue_shutdown();
}

static unsigned
mta_busy(void)
{
	return mta_queue_busy() + mta_spool_busy();
}

static void
mta_stop(void)
{
	mta_stopping = 1;
	mta_started = 0;
	inbox_close();
	mta_queue_stop();
}

const struct module mta_module = {
	.name = "mta",
	.start = mta_start,
	.reload = mta_reload,
	.shutdown = mta_shutdown,
	.busy = mta_busy,
	.stop = mta_stop,
};
