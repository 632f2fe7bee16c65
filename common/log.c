/*
 * log.c - the one logging API of the daemon and its tools.  Messages go to
 * syslog (facility mail) or, in the foreground, to stderr with a timestamp.
 * Message-level lines carry key=value fields; that is the callers' job,
 * this file only routes and prefixes them.
 *
 * A busy proxy logs several lines per message; log_hold() lets a thread
 * that runs an event loop keep its info and debug lines of one loop turn
 * in memory and write them with one write (log_flush, from that loop's
 * hook before it waits again).  Warnings and worse go out at once, after
 * what the thread holds, so its order stays.  The held lines are the
 * thread's own (thread-local), so a line costs no lock; other threads
 * (libuv's pool) hold nothing and write each line at once.  Only the
 * write to stderr takes log_mtx, once per line or per turn.
 *
 * It also owns the escaping of outside values (log_vis, log_word): the
 * one place that decides what of a peer's text may reach a log line.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <sys/uio.h>
#include <stdint.h>
#include <unistd.h>

#include "log.h"
#include "xmalloc.h"

#define LOG_HOLD_MAX	65536

/* set by log_init before any other thread runs */
static int	log_foreground = 1;
/* shared: set at start and reload, read by every thread */
static atomic_int	log_verbose;
/* shared: one writer to stderr at a time, so lines do not mix */
static pthread_mutex_t	log_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t	log_once = PTHREAD_ONCE_INIT;
/* per thread: the held lines of a loop thread (NULL: not holding) */
static _Thread_local char	*log_held;
static _Thread_local size_t	 log_heldlen;

void
log_init(const char *ident, int foreground, int verbose)
{
	log_foreground = foreground;
	atomic_store_explicit(&log_verbose, verbose, memory_order_relaxed);
	if (!foreground)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
	tzset();
}

void
log_setverbose(int v)
{
	atomic_store_explicit(&log_verbose, v, memory_order_relaxed);
}

int
log_getverbose(void)
{
	return atomic_load_explicit(&log_verbose, memory_order_relaxed);
}

/*
 * log_stamp - "YYYY-mm-ddTHH:MM:SS.mmm " into out (>= 32 bytes); the
 * calendar part is worked out once a second, not once a line: a busy
 * proxy logs several lines per message
 */
static size_t
log_stamp(char *out)
{
	static _Thread_local time_t last = -1;
	static _Thread_local char ts[24];
	static _Thread_local size_t tslen;
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

/* log_write - what the thread holds, then p (may be NULL), to stderr */
static void
log_write(const char *p, size_t n)
{
	struct iovec iov[2];
	size_t off;
	ssize_t w;
	int i = 0;

	if (log_heldlen > 0)
		iov[i++] = (struct iovec){ log_held, log_heldlen };
	if (n > 0)
		iov[i++] = (struct iovec){ (void *)(uintptr_t)p, n };
	log_heldlen = 0;
	if (i == 0)
		return;
	pthread_mutex_lock(&log_mtx);
	/* one writev, on a short write the rest piece by piece */
	for (off = 0; i > 0; ) {
		if ((w = writev(STDERR_FILENO, iov, i)) == -1 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off = (size_t)w;
		while (i > 0 && off >= iov[0].iov_len) {
			off -= iov[0].iov_len;
			iov[0] = iov[1];
			i--;
		}
		if (i > 0) {
			iov[0].iov_base = (char *)iov[0].iov_base + off;
			iov[0].iov_len -= off;
		}
	}
	pthread_mutex_unlock(&log_mtx);
}

/* log_flush - write the lines this thread holds */
void
log_flush(void)
{
	log_write(NULL, 0);
}

static void
log_atexit(void)
{
	atexit(log_flush);	/* fatal() and the end of main */
}

/* log_hold - from now on this thread keeps info and debug lines until
 * log_flush (foreground only); what is held at exit is written then */
void
log_hold(void)
{
	pthread_once(&log_once, log_atexit);
	if (log_held == NULL)
		log_held = xmalloc(LOG_HOLD_MAX);
}

/* log_unhold - a loop thread ends: what it holds is written, the buffer
 * freed, and its lines go out at once from now on */
void
log_unhold(void)
{
	log_write(NULL, 0);
	free(log_held);
	log_held = NULL;
}

/* log_put - one formatted line: held, or written after what is held */
static void
log_put(int pri, const char *line, size_t n)
{
	if (log_held != NULL && pri >= LOG_INFO) {
		if (log_heldlen + n > LOG_HOLD_MAX)
			log_write(NULL, 0);
		memcpy(log_held + log_heldlen, line, n);
		log_heldlen += n;
	} else
		log_write(line, n);
}

/* log_emit - one line, with the errno text when errnum is set */
static void PRINTF(3, 0)
log_emit(int pri, int errnum, const char *fmt, va_list ap)
{
	char line[32 + 4096 + 160];
	const char *e;
	size_t n, len, room;
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
	log_put(pri, line, n);
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

	if (log_getverbose() < 1)
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

/* log_esc1 - the escaped form of one octet into esc; its length */
static size_t
log_esc1(unsigned char c, int flags, char *esc)
{
	static const char hex[] = "0123456789abcdef";

	if (c == '"' || c == '\\') {
		esc[0] = '\\';
		esc[1] = (char)c;
		return 2;
	}
	if ((c > 32 && c < 127) || (c == ' ' && !(flags & LOG_VIS_SPACE))) {
		esc[0] = (char)c;
		return 1;
	}
	esc[0] = '\\';
	esc[1] = 'x';
	esc[2] = hex[c >> 4];
	esc[3] = hex[c & 15];
	return 4;
}

/*
 * log_strvis - src[0..srclen) escaped into dst (always NUL-terminated
 * when dstsz > 0), as OpenSMTPD's strnvis and Postfix's printable() do:
 * printable ASCII as it is, '"' and '\' backslashed, the space as \x20
 * with LOG_VIS_SPACE, every other octet (controls, DEL, 8-bit) as \xNN.
 * An escape is never cut in two: when the whole does not fit, what fits
 * is followed by "...".  Returns the length written.
 */
size_t
log_strvis(char *dst, size_t dstsz, const char *src, size_t srclen,
    int flags)
{
	const unsigned char *p = (const unsigned char *)src;
	char esc[4];
	size_t i, o = 0, n, total = 0, room;

	if (dstsz == 0)
		return 0;
	for (i = 0; i < srclen; i++)
		total += log_esc1(p[i], flags, esc);
	/* cut: keep room for "..." (when it fits at all) */
	room = total < dstsz ? dstsz - 1 : dstsz >= 4 ? dstsz - 4 : dstsz - 1;
	for (i = 0; i < srclen; i++) {
		n = log_esc1(p[i], flags, esc);
		if (o + n > room)
			break;
		memcpy(dst + o, esc, n);
		o += n;
	}
	if (i < srclen && dstsz >= 4) {
		memcpy(dst + o, "...", 3);
		o += 3;
	}
	dst[o] = '\0';
	return o;
}

/* log_slot - the next of the thread's LOG_VIS_SLOTS buffers */
static char *
log_slot(void)
{
	static _Thread_local char slots[LOG_VIS_SLOTS][LOG_VIS_MAX];
	static _Thread_local unsigned next;

	return slots[next++ % LOG_VIS_SLOTS];
}

/* log_visn - n octets of an outside value, for key="value" */
const char *
log_visn(const char *s, size_t n)
{
	char *out = log_slot();

	log_strvis(out, LOG_VIS_MAX, s != NULL ? s : "", s != NULL ? n : 0, 0);
	return out;
}

/* log_vis - an outside string, for key="value" */
const char *
log_vis(const char *s)
{
	return log_visn(s, s != NULL ? strlen(s) : 0);
}

/* log_word - an outside string, for key=value and key=<value> */
const char *
log_word(const char *s)
{
	char *out = log_slot();

	log_strvis(out, LOG_VIS_MAX, s != NULL ? s : "", s != NULL ?
	    strlen(s) : 0, LOG_VIS_SPACE);
	return out;
}
