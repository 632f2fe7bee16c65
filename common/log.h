/* log.h - the one logging API: syslog or stderr */
#ifndef MXB_LOG_H
#define MXB_LOG_H
#include <stdarg.h>

#define PRINTF(a, b)	__attribute__((format(printf, a, b)))

void	log_init(const char *ident, int foreground, int verbose);
void	log_setverbose(int);
int	log_getverbose(void);
void	log_hold(void);
void	log_flush(void);
void	log_warn(const char *, ...) PRINTF(1, 2);	/* appends strerror(errno) */
void	log_warnx(const char *, ...) PRINTF(1, 2);
void	log_info(const char *, ...) PRINTF(1, 2);
void	log_debug(const char *, ...) PRINTF(1, 2);
void	fatal(const char *, ...) PRINTF(1, 2) __attribute__((noreturn));
void	fatalx(const char *, ...) PRINTF(1, 2) __attribute__((noreturn));

#endif
