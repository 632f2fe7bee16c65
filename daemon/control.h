/*
 * control.h - the daemon's unix control socket.  Modules register the
 * commands they answer and the counters they add to "stats".
 */
#ifndef MXB_CONTROL_H
#define MXB_CONTROL_H
#include <uv.h>

#include "../common/buf.h"

#define CONTROL_MAXARGS	16

/* returns 0 on success, -1 with a reason written to out on failure */
typedef int	(*control_cmd_fn)(int argc, char **argv, struct buf *out);
/* appends "key=value\n" lines */
typedef void	(*control_stats_fn)(struct buf *out);

/*
 * A command whose answer comes later (its work runs off the loop): the
 * connection waits as a struct control_pending until
 * control_pending_done() gives the result (0 or -1) and the text.
 */
struct control_pending;
typedef void	(*control_later_fn)(int argc, char **argv,
		    struct control_pending *);

/* gid: the group that may use it too, or -1 (root and our user only) */
int	control_start(uv_loop_t *, const char *path, long gid);
void	control_stop(void);
void	control_register(const char *name, control_cmd_fn);
void	control_register_later(const char *name, control_later_fn);
void	control_pending_done(struct control_pending *, int rc,
	    const char *text);
void	control_register_stats(control_stats_fn);
void	control_stats_collect(struct buf *);	/* the "stats" text */

/*
 * control_answer_parse - check an answer as mxbridgectl reads it: 0 for
 * "OK", 1 for "ERR", with *body the offset of the text after that first
 * line; -1 for anything else (no first line, another word, a NUL byte).
 */
int	control_answer_parse(const char *data, size_t len, size_t *body);

#endif
