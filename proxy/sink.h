/*
 * sink.h - where a session's mail goes, as smtpd.c sees it.  Internal to
 * proxy/.  smtpd.c owns the server side toward the client (commands,
 * limits, STARTTLS, DATA reading, the order of the replies); a sink
 * takes the transaction on:
 *
 *  - sink_relay.c: the live relay, the server the client dialled
 *    (relay.c is its upstream leg);
 *  - sink_queue.c: the MTA path, the message queued by mta/.
 *
 * For each command the core hands a sink, it owes the client one reply:
 * the sink gives it with smtpd_sink_reply() (or _raw, _ehlo), at once
 * from inside the op or later, and the replies it owes come back in the
 * order of the commands.  The core writes them in its own order.
 * struct sink_env is the core's: it keeps it current, a sink only reads
 * it and passes it back to the smtpd_sink_*() calls.  After close() no
 * sink callback runs again.
 */
#ifndef MXB_SINK_H
#define MXB_SINK_H
#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "../common/addr.h"
#include "../common/buf.h"
#include "../common/smtp.h"
#include "../common/tls.h"
#include "../mta/mta.h"
#include "../policy/policy.h"
#include "proxy.h"

/* the MAIL command of the current transaction (from NULL: none) */
struct sink_mail {
	char			*from;
	char			*envid;
	enum mta_ret		 ret;
	uint64_t		 size;
	int			 body8;
	int			 smtputf8;
};

/* what one session's sink may read of it */
struct sink_env {
	struct proxy_conn	 conn;		/* conn.worker: its worker */
	struct policy		*pol;		/* conn.policy */
	uv_loop_t		*loop;
	char			 host[256];	/* our name */
	char			 cstr[ADDR_STRLEN];	/* client, for logs */
	char			 dstr[ADDR_STRLEN];	/* orig_dst, for logs */
	char			*helo;		/* the client's name, or NULL */
	struct tls_conn		*tls;		/* toward the client, or NULL */
	int			 authed;
	unsigned		 msgs;		/* messages accepted so far */
	struct sink_mail	 mail;
};

/* the ESMTP extensions the client was offered (the last EHLO's reply) */
struct sink_caps {
	int			 pipelining;
	int			 enhanced;
	int			 eightbit;
	int			 dsn;
	int			 auth;
	int			 smtputf8;
};

struct sink;

/* what a sink is, besides its ops */
#define SINK_F_HELO_FIRST 0x01	/* MAIL, RCPT, DATA, AUTH, VRFY and EXPN
				   wait for a HELO: its leg is set up then */
#define SINK_F_SEQUENCE	  0x02	/* its server checks the command
				   sequence: a nested MAIL, or RCPT or DATA
				   without MAIL, goes to it */
#define SINK_F_HOP	  0x04	/* it adds a Received: field: the hop
				   limit is checked here */
#define SINK_F_STUFFED	  0x08	/* content goes on dot-stuffed, as read */

struct sink_ops {
	const char	*name;		/* path= on the session's log line */
	const char	*accepted;	/* a message's disposition at 2xx */
	unsigned	 flags;
	/* set up; no callback before it returns */
	struct sink	*(*open)(struct sink_env *);
	/* go: the greeting comes with smtpd_sink_greeting(), now or later */
	void		 (*greet)(struct sink *);
	/* HELO/EHLO (the client's line): a 250 to EHLO comes with
	 * smtpd_sink_ehlo(), or with smtpd_sink_raw() and then ehlo() */
	void		 (*helo)(struct sink *, int ehlo,
			    const struct smtp_line *);
	/* a server's 250 to EHLO: the capability lines ("250-..." CRLF,
	 * the first one the server's name) and what they offer */
	void		 (*ehlo)(struct sink *, const struct smtp_reply *,
			    struct buf *, struct sink_caps *);
	/* MAIL (env->mail is set) */
	void		 (*mail)(struct sink *, const struct smtp_line *);
	void		 (*rcpt)(struct sink *, const struct smtp_path *,
			    const struct smtp_line *);
	/* DATA: 354, and content follows */
	void		 (*data)(struct sink *);
	/*
	 * a run of content (maybe more than one line; as read, or
	 * un-stuffed): it points into the reader's buffer, valid until
	 * flush().  Either returns NULL, or the reply that refuses the
	 * message (*why: for its log line) when it cannot be taken.
	 */
	const char	*(*content)(struct sink *, const char *, size_t,
			    const char **why);
	const char	*(*flush)(struct sink *, const char **why);
	/* the final dot of a message not refused: answer it */
	void		 (*end)(struct sink *);
	/* the message is refused: drop its content, it never ends.  0:
	 * ignored, it is being dropped anyway (the refusal is not said) */
	int		 (*abort)(struct sink *);
	/* the transaction is over (RSET, a refused MAIL, HELO, the dot) */
	void		 (*reset)(struct sink *);
	/* RSET, NOOP, VRFY, EXPN, HELP, QUIT as they are, or NULL: the
	 * core answers them */
	void		 (*verb)(struct sink *, const struct smtp_line *);
	/* AUTH, and each answer to a 334 (NULL: cancel); NULL: no AUTH */
	void		 (*auth)(struct sink *, const struct smtp_line *);
	/* 1 if AUTH is refused only because the client is not under TLS */
	int		 (*auth_tls)(struct sink *);
	/* the sink cannot take another command: its disposition, and the
	 * 421 line in line; NULL while it can */
	const char	*(*lost)(struct sink *, char *line, size_t);
	/* 1 while content should wait (the sink's backlog is high) */
	int		 (*busy)(struct sink *);
	/* the answer for this session's id (smtpd_sink_await) */
	void		 (*answer)(struct sink *, int status,
			    const char *id_or_reason);
	/* the session says goodbye: let go of what no owed answer needs */
	void		 (*quit)(struct sink *);
	/* the end: free it */
	void		 (*close)(struct sink *);
};

extern const struct sink_ops sink_relay_ops;
extern const struct sink_ops sink_queue_ops;

/* the core's side, for the sinks (smtpd.c) */
void	 smtpd_sink_greeting(struct sink_env *, const char *text, size_t,
	    const char *refused);
/* the oldest reply owed: one "DDD text" line (the enhanced code cut when
 * it was not offered); -1 if none is owed (the session is ending) */
int	 smtpd_sink_reply(struct sink_env *, const char *line);
/* the same, a server's reply passed on as it came */
int	 smtpd_sink_raw(struct sink_env *, const struct smtp_reply *);
/* a 250 to EHLO: capability lines ("250-" CRLF) and the offer */
void	 smtpd_sink_ehlo(struct sink_env *, const struct sink_caps *,
	    const struct buf *);
/* the capabilities offered until the next EHLO */
void	 smtpd_sink_caps(struct sink_env *, const struct sink_caps *);
/* input waits for the reply owed to the command being handed over */
void	 smtpd_sink_wait(struct sink_env *);
/* a reply owed ahead of that one that the client does not see */
void	 smtpd_sink_silent(struct sink_env *);
/* why the message is refused or not queued, for its log line */
void	 smtpd_sink_reason(struct sink_env *, const char *why);
/* the session's milter chain for this sink, which can apply the edits
 * given (MILTER_EDIT_*); NULL when policy names no milter here */
struct milter_chain;
struct milter_answer;
struct milter_chain *smtpd_sink_milters(struct sink_env *, unsigned edits,
	    void (*done)(void *, const struct milter_answer *),
	    void (*wake)(void *), void *arg);
/* a recipient named on the message's log line */
void	 smtpd_sink_log_rcpt(struct sink_env *, const char *addr);
/* the reply to a RCPT an explicit rule does not let through (not
 * POLICY_RELAY: nothing said), msg the rule's text or NULL */
void	 smtpd_sink_rule_reply(struct sink_env *, enum policy_verdict,
	    const char *msg);
/* the sink can go on: take more input if the session may */
void	 smtpd_sink_wake(struct sink_env *);
/* the sink is gone: say line (421), log the message if one was open */
void	 smtpd_sink_lost(struct sink_env *, const char *disposition,
	    const char *line);
/* say 421 and go, without a message log line */
void	 smtpd_sink_421(struct sink_env *, const char *disposition,
	    const char *line);
/* wait (on=1) or no more (0) for an answer by session id */
void	 smtpd_sink_await(struct sink_env *, int on);

#endif
