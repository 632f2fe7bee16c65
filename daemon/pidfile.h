/*
 * pidfile.h - the daemon's pid file, held with a lock for the daemon's
 * life: a second instance is refused by the lock, never by the pid.
 */
#ifndef MXB_PIDFILE_H
#define MXB_PIDFILE_H
#include <stddef.h>
#include <sys/types.h>

/*
 * pidfile_lock - open (create) path and lock it, before daemonizing.
 * The descriptor, or -1 with the reason in err: "already running:
 * pid=N pidfile=PATH" when another process holds the lock.
 */
int	pidfile_lock(const char *path, char *err, size_t errlen);
/* pidfile_write - the pid into the locked file (after daemonizing): 0/-1 */
int	pidfile_write(int fd, pid_t pid);
/* pidfile_release - unlink path and drop the lock (at exit) */
void	pidfile_release(int fd, const char *path);

#endif
