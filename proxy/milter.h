/*
 * milter.h - the milter client: one session's chain of content filters,
 * spoken to in Sendmail's milter protocol (version 6, as Postfix's
 * smtpd_milters speak it).  Internal to proxy/: the queue sink drives
 * it, one step at a time, and applies what it answers.
 *
 * Each step (connect, HELO, MAIL, RCPT, DATA, end of message) goes to
 * the milters in their configured order and is answered once, through
 * the chain's callback, by a struct milter_answer; the content between
 * DATA and the end goes to every milter as it arrives (milter_content),
 * and what a milter says about it is answered at the end.  A milter that
 * cannot be reached, times out or speaks out of turn stands for its
 * default-action from then on (the log says which and why).
 */
#ifndef MXB_MILTER_H
#define MXB_MILTER_H
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "../common/buf.h"
#include "../common/smtp.h"
#include "../policy/policy.h"

enum milter_verdict {
	MILTER_CONTINUE = 0,	/* go on (also: accepted) */
	MILTER_REJECT,		/* 5xx */
	MILTER_TEMPFAIL,	/* 4xx */
	MILTER_DISCARD		/* 250, and the message is dropped */
};

struct milter_answer {
	enum milter_verdict	 verdict;
	/* the SMTP reply to give (CRLF lines, code and enhanced code), or
	 * empty: the caller's own for the verdict */
	const struct smtp_reply	*reply;
	const char		*milter;	/* which decided, or NULL */
	const char		*why;		/* for the log, or NULL */
};

typedef void	(*milter_cb)(void *arg, const struct milter_answer *);

/* what a sink can apply beyond header edits and quarantine (those are
 * always offered): only these actions are offered to the milters */
#define MILTER_EDIT_BODY	0x01	/* SMFIF_CHGBODY */
#define MILTER_EDIT_ENVELOPE	0x02	/* SMFIF_ADDRCPT(_PAR), _DELRCPT,
					   _CHGFROM */

/* the session's facts a milter is told (copied) */
struct milter_info {
	uint64_t		 session_id;
	struct sockaddr_storage	 client;
	struct sockaddr_storage	 orig_dst;
	const char		*hostname;	/* ours ({j}) */
	const char		*port;		/* ingress bridge port or "" */
	unsigned		 edits;		/* MILTER_EDIT_* */
};

/* one envelope change a milter asked for at the end of the message */
enum milter_envop { MILTER_ADDRCPT = 0, MILTER_DELRCPT, MILTER_CHGFROM };

struct milter_envedit {
	enum milter_envop	 op;
	const char		*milter;	/* its name */
	char			*addr;		/* no brackets; "" for <> */
	const char		*domain;	/* into addr, or NULL */
	char			*notify;	/* ADDRCPT_PAR's NOTIFY= or NULL */
	char			*orcpt;		/* ADDRCPT_PAR's ORCPT= or NULL */
};

struct milter_chain;

/* NULL when set is NULL or empty; cb answers every step; wake: the
 * content may flow again (milter_busy went 0) */
struct milter_chain *milter_chain_new(uv_loop_t *, const struct policy *,
	    const struct policy_milterset *, const struct milter_info *,
	    milter_cb cb, void (*wake)(void *), void *arg);
/* the steps: each answered once by cb (maybe before it returns) */
void	 milter_connect(struct milter_chain *);
void	 milter_helo(struct milter_chain *, const char *helo,
	    const char *tls_version, const char *cipher);
/* argv: "<addr>" then the ESMTP parameters */
void	 milter_mail(struct milter_chain *, const char *const *argv, int argc,
	    const char *auth);
void	 milter_rcpt(struct milter_chain *, const char *const *argv, int argc);
void	 milter_data(struct milter_chain *, const char *queue_id);
/* content as delivered (CRLF lines, not stuffed), any cut: no answer */
void	 milter_content(struct milter_chain *, const char *, size_t);
int	 milter_busy(const struct milter_chain *);
void	 milter_eom(struct milter_chain *);
/* the transaction is over without its end (RSET, refused): no answer is
 * owed any more */
void	 milter_abort(struct milter_chain *);
/* after an accepted end: the header section as the milters left it
 * (CRLF lines) and how many bytes of the original it replaces; 0 if no
 * milter changed it */
int	 milter_edited_head(struct milter_chain *, struct buf *out,
	    uint64_t *oldlen);
/* after an accepted end: 1 and the whole message content (the header
 * section as the milters left it, the empty line, the body a milter
 * replaced it with, CRLF lines) moved into out (by: which milter); 0 if
 * no milter replaced the body */
int	 milter_replaced_body(struct milter_chain *, struct buf *out,
	    const char **by, size_t *bodylen);
/* after an accepted end: the envelope changes, in the order asked */
size_t	 milter_envedits(const struct milter_chain *,
	    const struct milter_envedit **);
/* a milter still in the session was granted header edits (asked for at
 * DATA: the live relay then holds the message back until the end) */
int	 milter_may_edit_head(const struct milter_chain *);
/* after an accepted end: a milter's quarantine reason, or NULL */
const char *milter_quarantine(const struct milter_chain *);
/* the session ends: QUIT to each, then free */
void	 milter_chain_free(struct milter_chain *);

/* the offer of actions made to a milter for a sink's MILTER_EDIT_* */
uint32_t milter_offer(unsigned edits);
/* one envelope reply packet (SMFIR_ADDRCPT, _ADDRCPT_PAR, _DELRCPT,
 * _CHGFROM: its command byte and data) checked and parsed: 0, or -1 when
 * out of form (the milter is out of protocol); exposed for the unit
 * tests */
int	 milter_envedit_parse(char cmd, const char *data, size_t len,
	    const struct smtp_limits *, struct milter_envedit *);
void	 milter_envedit_free(struct milter_envedit *);
/* the replacement body: bare LF made CRLF (cr: the last byte was CR,
 * across calls) */
void	 milter_body_crlf(struct buf *, const char *, size_t, int *cr);

/* the header editor, exposed for the unit tests: parse a header section
 * (CRLF lines), apply edits in order, render */
struct milter_head;
struct milter_head *milter_head_new(void);
/* feed content; returns how many bytes of it belong to the header (the
 * rest is body); *done once the header section ended */
size_t	 milter_head_feed(struct milter_head *, const char *, size_t,
	    int *done);
size_t	 milter_head_count(const struct milter_head *);
/* after the header ended on a line that is not a field: that line,
 * the body's first (its bytes were fed already) */
const char *milter_head_leftover(const struct milter_head *, size_t *);
/* field i: its name (NUL ended) and its value as a milter gets it
 * (folds as LF, leading white space cut unless lead) */
void	 milter_head_field(const struct milter_head *, size_t i, int lead,
	    struct buf *name, struct buf *value);
int	 milter_head_add(struct milter_head *, const char *name,
	    const char *value);
int	 milter_head_insert(struct milter_head *, uint32_t idx,
	    const char *name, const char *value);
int	 milter_head_change(struct milter_head *, uint32_t idx,
	    const char *name, const char *value);
/* the header section now; its original length in *oldlen */
void	 milter_head_render(const struct milter_head *, struct buf *,
	    uint64_t *oldlen);
int	 milter_head_edited(const struct milter_head *);
void	 milter_head_free(struct milter_head *);

#endif
