/*
 * mta.h - the built-in queuing MTA as seen by the rest of the daemon:
 * the proxy hands it accepted messages; the control socket asks it about
 * the queue.  A message is durable only after mta_msg_commit() calls
 * back with status 0; the proxy answers 250 then and not before.
 */
#ifndef MXB_MTA_H
#define MXB_MTA_H
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "../daemon/module.h"
#include "../policy/policy.h"

/* DSN NOTIFY bits (RFC 3461) */
#define MTA_NOTIFY_NEVER	0x01
#define MTA_NOTIFY_SUCCESS	0x02
#define MTA_NOTIFY_FAILURE	0x04
#define MTA_NOTIFY_DELAY	0x08

enum mta_ret { MTA_RET_UNSET = 0, MTA_RET_FULL, MTA_RET_HDRS };

/* the session's facts and the envelope's ESMTP parameters */
struct mta_info {
	uint64_t		 session_id;
	struct sockaddr_storage	 client;
	struct sockaddr_storage	 orig_dst;
	enum policy_dir		 dir;
	const char		*helo;
	const char		*tls;		/* "TLSv1.3:cipher" or NULL */
	const char		*sender;	/* "" for the null sender */
	const char		*envid;		/* DSN ENVID or NULL */
	enum mta_ret		 ret;
	uint64_t		 size;		/* SIZE= or 0 */
	int			 body_8bit;	/* BODY=8BITMIME */
	int			 smtputf8;
	const char		*auth;		/* AUTH user or NULL */
	uv_loop_t		*loop;		/* the caller's: a body over
						   memory's share is written
						   to its spill file there */
};

struct mta_msg;		/* opaque: one message being received */

extern const struct module mta_module;

/* 0, or -1 when the spool cannot take mail now (say 452/451) */
int		 mta_can_accept(void);
struct mta_msg	*mta_msg_new(const struct mta_info *);
/* route as decided by policy_route_rcpt(); orcpt and notify may be 0 */
void		 mta_msg_add_rcpt(struct mta_msg *, const char *rcpt,
		    const char *orcpt, unsigned notify, enum policy_route);
/*
 * Queue the message on hold (a quarantine, say a milter's
 * SMFIR_QUARANTINE): spooled with its hold in the same commit, never
 * tried, expired or warned about until an administrator releases it
 * ("queue release") or deletes it.  reason (copied) may be NULL.
 * After mta_msg_new(), before mta_msg_commit() or mta_msg_submit().
 */
void		 mta_msg_hold(struct mta_msg *, const char *reason);
/* body bytes exactly as they will be delivered: CRLF lines, no stuffing;
 * -1 once a spill write failed (the message cannot be queued) */
int		 mta_msg_write(struct mta_msg *, const void *, size_t);
/* 1 while the bytes waiting for the spill file are over the mark: the
 * caller stops reading until the wake callback (on its loop) */
int		 mta_msg_busy(const struct mta_msg *);
void		 mta_msg_set_wake(struct mta_msg *, void (*)(void *), void *);
/* its queue id, known from mta_msg_new() */
const char	*mta_msg_id(const struct mta_msg *);
/* before the commit: the first skip bytes written (the header section)
 * become head (CRLF lines), as a content filter edited them */
void		 mta_msg_edit_head(struct mta_msg *, uint64_t skip,
		    const void *head, size_t len);
/* before the commit: the whole content written (header and body) becomes
 * content (CRLF lines, taken over and reset): a content filter replaced
 * the body */
struct buf;
void		 mta_msg_replace(struct mta_msg *, struct buf *content);
/* before the commit, the envelope as a content filter changed it */
/* the sender ("" for <>) */
void		 mta_msg_set_sender(struct mta_msg *, const char *sender);
/* the recipients whose address is rcpt (in any case) go: how many did */
unsigned	 mta_msg_del_rcpt(struct mta_msg *, const char *rcpt);
/* 1 if rcpt (in any case) is a recipient already */
int		 mta_msg_has_rcpt(const struct mta_msg *, const char *rcpt);
/* how many recipients there are */
size_t		 mta_msg_nrcpt(const struct mta_msg *);
/*
 * Make the message durable (fsyncs grouped across sessions) and call cb
 * with status 0 and the queue id, or -1 and a reason; the message is
 * freed by then.  mta_msg_abort() frees without queuing.
 */
typedef void	(*mta_commit_cb)(void *arg, int status, const char *id_or_reason);
/* on the MTA's own thread (the daemon's) */
void		 mta_msg_commit(struct mta_msg *, mta_commit_cb, void *arg);
void		 mta_msg_abort(struct mta_msg *);

/*
 * The front door, for worker threads: a worker opens one door on its
 * loop; mta_msg_submit() hands a message over with a ticket (the
 * session id), and the answer comes back on the door's loop by ticket,
 * whether or not the session is still there (status 0 and the queue id:
 * queued, whatever became of the session).  mta_door_close() on the
 * worker's thread: no answer is read after it.
 */
struct mta_door;
typedef void	(*mta_door_cb)(void *arg, uint64_t ticket, int status,
		    const char *id_or_reason);
struct mta_door	*mta_door_open(uv_loop_t *, mta_door_cb, void *arg);
void		 mta_door_close(struct mta_door *);
void		 mta_msg_submit(struct mta_msg *, struct mta_door *,
		    uint64_t ticket);

#endif
