/* log.h - the one logging API: syslog or stderr */
#ifndef MXB_LOG_H
#define MXB_LOG_H
#include <stdarg.h>

#define PRINTF(a, b)	__attribute__((format(printf, a, b)))

void	log_init(const char *ident, int foreground, int verbose);
void	log_setverbose(int);
int	log_getverbose(void);
void	log_hold(void);
void	log_unhold(void);
void	log_flush(void);
void	log_warn(const char *, ...) PRINTF(1, 2);	/* appends strerror(errno) */
void	log_warnx(const char *, ...) PRINTF(1, 2);
void	log_info(const char *, ...) PRINTF(1, 2);
void	log_debug(const char *, ...) PRINTF(1, 2);
void	fatal(const char *, ...) PRINTF(1, 2) __attribute__((noreturn));
void	fatalx(const char *, ...) PRINTF(1, 2) __attribute__((noreturn));

/*
 * Values from outside (a client's HELO and addresses, a server's reply, a
 * DNS name, a certificate's subject) go into a log line only through
 * these, so that nobody can put a control sequence, a line break or a
 * field of their own into our logs.  Printable ASCII stays as it is, but
 * for '"' and '\' (written \" and \\); every other octet is written \xNN.
 * log_word() also writes the space as \x20, for values that are not
 * between quotes (key=value, key=<value>); log_vis() keeps it, for
 * key="value".  Both return a thread-local buffer, one of LOG_VIS_SLOTS
 * used in turn: at most that many in one log call.  A value whose
 * escaped form is over LOG_VIS_MAX is cut and ends in "...".  NULL is "".
 */
#define LOG_VIS_SLOTS	8
#define LOG_VIS_MAX	2048
#define LOG_VIS_SPACE	0x01	/* escape the space too */

size_t	log_strvis(char *dst, size_t dstsz, const char *src, size_t srclen,
	    int flags);
const char *log_vis(const char *);
const char *log_visn(const char *, size_t);
const char *log_word(const char *);

#endif
