/*
 * log.c - the one logging API of the daemon and its tools.  Messages go to
 * syslog (facility mail) or, in the foreground, to stderr with a timestamp.
 * Message-level lines carry key=value fields; that is the callers' job,
 * this file only routes and prefixes them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static int	log_foreground = 1;
static int	log_verbose;

void
log_init(const char *ident, int foreground, int verbose)
{
	log_foreground = foreground;
	log_verbose = verbose;
	if (!foreground)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
	tzset();
}

void
log_setverbose(int v)
{
	log_verbose = v;
}

int
log_getverbose(void)
{
	return log_verbose;
}

/*
 * log_stamp - "YYYY-mm-ddTHH:MM:SS.mmm " into out (>= 32 bytes); the
 * calendar part is worked out once a second, not once a line: a busy
 * proxy logs several lines per message
 */
static size_t
log_stamp(char *out)
{
	static time_t last = -1;
	static char ts[24];
	static size_t tslen;
	struct timespec now;
	struct tm tm;
	long ms;

	clock_gettime(CLOCK_REALTIME, &now);
	if (now.tv_sec != last) {
		localtime_r(&now.tv_sec, &tm);
		tslen = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
		last = now.tv_sec;
	}
	ms = now.tv_nsec / 1000000;
	memcpy(out, ts, tslen);
	out[tslen] = '.';
	out[tslen + 1] = (char)('0' + ms / 100);
	out[tslen + 2] = (char)('0' + ms / 10 % 10);
	out[tslen + 3] = (char)('0' + ms % 10);
	out[tslen + 4] = ' ';
	return tslen + 5;
}

/* log_emit - write one line, with the errno text when errnum is set */
static void
log_emit(int pri, int errnum, const char *fmt, va_list ap)
{
	char line[32 + 4096 + 160];
	const char *e;
	size_t n, off, len, room;
	ssize_t w;
	int k;

	if (!log_foreground) {
		vsnprintf(line, 4096, fmt, ap);
		if (errnum)
			syslog(pri, "%s: %s", line, strerror(errnum));
		else
			syslog(pri, "%s", line);
		return;
	}
	/* the whole line in one buffer and one write, formatted once */
	n = log_stamp(line);
	room = 4096;
	if ((k = vsnprintf(line + n, room, fmt, ap)) < 0)
		k = 0;
	n += (size_t)k < room ? (size_t)k : room - 1;
	if (errnum) {
		e = strerror(errnum);
		len = strlen(e);
		if (len > sizeof(line) - n - 3)
			len = sizeof(line) - n - 3;
		memcpy(line + n, ": ", 2);
		memcpy(line + n + 2, e, len);
		n += len + 2;
	}
	line[n++] = '\n';
	for (off = 0; off < n; off += (size_t)w) {
		if ((w = write(STDERR_FILENO, line + off, n - off)) == -1 &&
		    errno == EINTR)
			w = 0;
		else if (w <= 0)
			return;
	}
}

void
log_warn(const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	log_emit(LOG_WARNING, saved, fmt, ap);
	va_end(ap);
	errno = saved;
}

void
log_warnx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_WARNING, 0, fmt, ap);
	va_end(ap);
}

void
log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_INFO, 0, fmt, ap);
	va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
	va_list ap;

	if (log_verbose < 1)
		return;
	va_start(ap, fmt);
	log_emit(LOG_DEBUG, 0, fmt, ap);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	log_emit(LOG_CRIT, saved, fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_CRIT, 0, fmt, ap);
	va_end(ap);
	exit(1);
}
