/*
 * priv.c - the daemon's rights.  Owns the one change from root to the
 * configured user ("user", default _mxbridge) and the sandbox after it.
 *
 * When: after what needs root (the pid file, the control socket and its
 * group) and before the first thread.  Capabilities are per thread in
 * Linux and glibc changes them for the calling thread only; done before
 * any thread exists, every thread the daemon, libuv's pool and OpenSSL
 * make later inherits the result, and there is nothing to do per thread.
 * The listeners and the NFQUEUE queues are opened after it, by the
 * workers, with the capabilities kept; the spool is the user's own.
 *
 * What is kept, and why (nothing else, in any set, bounding included):
 *   CAP_NET_ADMIN         NFQUEUE: nfnetlink checks it on every message
 *                         the daemon sends, each verdict included; SO_MARK
 *                         on the upstream and delivery sockets (their
 *                         packets skip interception); IP_TRANSPARENT on
 *                         the TPROXY listeners and the hide-box sockets.
 *   CAP_NET_BIND_SERVICE  only while a listener port is below 1024 at
 *                         start (a reload may move a listener).
 * Then PR_SET_NO_NEW_PRIVS and a seccomp allowlist of the system calls
 * the daemon makes (libseccomp): any other call kills the whole process
 * (SCMP_ACT_KILL_PROCESS), and the kernel logs it (audit type 1326, with
 * the call's number; scmp_sys_resolver(1) names it).
 */
#include <sys/prctl.h>
#include <sys/types.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cap-ng.h>
#include <seccomp.h>

#include "../common/log.h"
#include "../policy/policy.h"
#include "priv.h"

static int	bind_low;	/* CAP_NET_BIND_SERVICE was kept */

/*
 * The system calls of the daemon, its libraries (libuv, OpenSSL, ldns,
 * libnetfilter_queue, glibc's resolver and name service) and its worker
 * and pool threads.  No exec, no ptrace, no mount, no module, no setuid,
 * no chown, no new namespace.  Names this architecture lacks are skipped.
 */
static const char *const allowed[] = {
	/* files: the spool, the configuration at reload, /etc for names */
	"read", "write", "readv", "writev", "pread64", "pwrite64", "preadv",
	"pwritev", "lseek", "close", "dup", "dup2", "dup3", "fcntl", "ioctl",
	"fstat", "newfstatat", "stat", "lstat", "statx", "fstatfs", "statfs",
	"open", "openat", "access", "faccessat", "faccessat2", "readlink",
	"readlinkat", "getdents", "getdents64", "mkdir", "mkdirat", "rename", "renameat",
	"renameat2", "unlink", "unlinkat", "rmdir", "link", "linkat",
	"fsync", "fdatasync", "sync_file_range", "fallocate", "ftruncate",
	"fchmod", "flock", "fadvise64", "umask", "getcwd",
	/* memory */
	"brk", "mmap", "munmap", "mremap", "mprotect", "madvise",
	/* sockets: listeners, sessions, upstreams, DNS, netlink, syslog */
	"socket", "socketpair", "bind", "listen", "accept", "accept4",
	"connect", "getsockname", "getpeername", "setsockopt", "getsockopt",
	"sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
	"shutdown",
	/* event loops */
	"epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait",
	"epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect6",
	"eventfd", "eventfd2", "pipe", "pipe2",
	/* threads */
	"clone", "clone3", "futex", "set_robust_list", "get_robust_list",
	"rseq", "set_tid_address", "sched_yield", "sched_getaffinity",
	"gettid", "getpid", "getppid", "tgkill", "tkill", "exit",
	"exit_group", "prctl", "membarrier",
	/* signals */
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",
	"restart_syscall",
	/* time */
	"clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep",
	"clock_nanosleep",
	/* who am I (the spool and control checks), and the rest */
	"getuid", "geteuid", "getgid", "getegid", "getgroups", "getresuid",
	"getresgid", "capget", "uname", "getrandom", "sysinfo", "getrlimit",
	"prlimit64",
	NULL
};

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PRIV_SANITIZER	1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PRIV_SANITIZER	1
#endif
#endif

#ifdef PRIV_SANITIZER
/* LeakSanitizer stops the world at exit: a clone that ptrace(2)s every
 * thread; only in the sanitizer build of the test suite */
static const char *const allowed_sanitizer[] = {
	"ptrace", "wait4", "waitid", "kill", "process_vm_readv", "mincore",
	"setrlimit", NULL
};
#endif

/* priv_lookup - the configured user's ids; 0, or -1 with err */
int
priv_lookup(const struct policy *p, uid_t *uid, gid_t *gid, char *err,
    size_t errlen)
{
	struct passwd pw, *res = NULL;
	char buf[4096];
	int rc;

	if ((rc = getpwnam_r(p->user, &pw, buf, sizeof(buf), &res)) != 0 ||
	    res == NULL) {
		snprintf(err, errlen, "user %s: %s (the daemon runs as it; "
		    "create it, e.g. adduser --system --group %s, or name "
		    "another with 'user' in %s)", p->user,
		    rc ? strerror(rc) : "no such user", p->user, p->path);
		return -1;
	}
	if (pw.pw_uid == 0) {
		snprintf(err, errlen, "user %s: uid 0: the daemon does not run "
		    "as root", p->user);
		return -1;
	}
	*uid = pw.pw_uid;
	*gid = pw.pw_gid;
	return 0;
}

/* low_port - a listener port of p needs CAP_NET_BIND_SERVICE */
static int
low_port(const struct policy *p)
{
	return p->listen_port[POLICY_DIR_IN] < 1024 ||
	    p->listen_port[POLICY_DIR_OUT] < 1024;
}

/* keep - the capability sets of this thread: only the kept ones */
static void
keep(int low)
{
	capng_clear(CAPNG_SELECT_BOTH);
	capng_update(CAPNG_ADD, CAPNG_EFFECTIVE | CAPNG_PERMITTED,
	    CAP_NET_ADMIN);
	if (low)
		capng_update(CAPNG_ADD, CAPNG_EFFECTIVE | CAPNG_PERMITTED,
		    CAP_NET_BIND_SERVICE);
}

/*
 * priv_drop - become p's user with only the kept capabilities.  Started
 * as root: uid, gid, no supplementary groups, the bounding set cleared.
 * Started as that user already (systemd's User= with
 * AmbientCapabilities=): only the capability sets are cut.  Started as
 * anyone else: refused.  0, or -1 with err.
 */
int
priv_drop(const struct policy *p, char *err, size_t errlen)
{
	uid_t uid;
	gid_t gid;
	int rc, low = low_port(p);

	if (priv_lookup(p, &uid, &gid, err, errlen) == -1)
		return -1;
	if (geteuid() == 0) {
		keep(low);
		rc = capng_change_id((int)uid, (int)gid,
		    CAPNG_DROP_SUPP_GRP | CAPNG_CLEAR_BOUNDING);
		if (rc != 0) {
			snprintf(err, errlen, "user %s: cannot become uid %ld "
			    "gid %ld (capng_change_id %d): %s", p->user,
			    (long)uid, (long)gid, rc, strerror(errno));
			return -1;
		}
	} else if (geteuid() != uid) {
		snprintf(err, errlen, "started as uid %ld, which is neither "
		    "root nor user %s (uid %ld)", (long)geteuid(), p->user,
		    (long)uid);
		return -1;
	} else {
		capng_get_caps_process();
		if (!capng_have_capability(CAPNG_PERMITTED, CAP_NET_ADMIN)) {
			snprintf(err, errlen, "started as user %s without "
			    "CAP_NET_ADMIN (the NFQUEUE queues, SO_MARK, "
			    "IP_TRANSPARENT need it; systemd: "
			    "AmbientCapabilities=CAP_NET_ADMIN)", p->user);
			return -1;
		}
		if (low && !capng_have_capability(CAPNG_PERMITTED,
		    CAP_NET_BIND_SERVICE)) {
			snprintf(err, errlen, "started as user %s without "
			    "CAP_NET_BIND_SERVICE, and a listener port is "
			    "below 1024", p->user);
			return -1;
		}
		keep(low);
		if (capng_apply(CAPNG_SELECT_CAPS) != 0) {
			snprintf(err, errlen, "capabilities: cannot set them: "
			    "%s", strerror(errno));
			return -1;
		}
	}
	bind_low = low;
#ifdef PRIV_SANITIZER
	/* the change of uid made the process not dumpable: LeakSanitizer
	 * could not attach to its own threads at exit */
	(void)prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
#endif
	log_info("privileges: user=%s uid=%ld gid=%ld capabilities=%s",
	    p->user, (long)getuid(), (long)getgid(),
	    low ? "cap_net_admin,cap_net_bind_service" : "cap_net_admin");
	return 0;
}

/* add_rules - allow every name of list that this architecture has */
static int
add_rules(scmp_filter_ctx ctx, const char *const *list, char *err,
    size_t errlen)
{
	int nr, rc;

	for (; *list != NULL; list++) {
		if ((nr = seccomp_syscall_resolve_name(*list)) == __NR_SCMP_ERROR)
			continue;
		if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0)) != 0) {
			snprintf(err, errlen, "seccomp: allow %s: %s", *list,
			    strerror(-rc));
			return -1;
		}
	}
	return 0;
}

/*
 * priv_sandbox - no new privileges, and the allowlist: for this thread
 * and every thread it makes after.  0, or -1 with err.
 */
int
priv_sandbox(char *err, size_t errlen)
{
	scmp_filter_ctx ctx;
	int rc = -1, e;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1) {
		snprintf(err, errlen, "PR_SET_NO_NEW_PRIVS: %s",
		    strerror(errno));
		return -1;
	}
	if ((ctx = seccomp_init(SCMP_ACT_KILL_PROCESS)) == NULL) {
		snprintf(err, errlen, "seccomp: cannot make a filter");
		return -1;
	}
	/* the kernel logs what the filter kills (SECCOMP_FILTER_FLAG_LOG) */
	if ((e = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_LOG, 1)) != 0) {
		snprintf(err, errlen, "seccomp: log: %s", strerror(-e));
		goto done;
	}
	/* a binary tree of the calls rather than a list: fewer filter
	 * instructions on the calls the kernel's allow cache does not take
	 * (none here: no rule looks at arguments, so since Linux 5.11 an
	 * allowed call costs a bitmap lookup) */
	(void)seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	if (add_rules(ctx, allowed, err, errlen) == -1)
		goto done;
#ifdef PRIV_SANITIZER
	if (add_rules(ctx, allowed_sanitizer, err, errlen) == -1)
		goto done;
#endif
	if ((e = seccomp_load(ctx)) != 0) {
		snprintf(err, errlen, "seccomp: load: %s", strerror(-e));
		goto done;
	}
	rc = 0;
done:
	seccomp_release(ctx);
	return rc;
}

/* priv_reload_check - what a reload to p would need that the daemon no
 * longer has; 0, or -1 with err */
int
priv_reload_check(const struct policy *old, const struct policy *p,
    char *err, size_t errlen)
{
	int d;

	for (d = 0; d < 2; d++) {
		if (p->listen_port[d] == old->listen_port[d] ||
		    p->listen_port[d] >= 1024 || bind_low)
			continue;
		snprintf(err, errlen, "listen %s port %u: a port below 1024 "
		    "needs CAP_NET_BIND_SERVICE, which the daemon (user %s) "
		    "kept only for a port below 1024 at start: restart it",
		    d == POLICY_DIR_IN ? "incoming" : "outgoing",
		    p->listen_port[d], old->user);
		return -1;
	}
	return 0;
}
