/*
 * sdnotify.h - the daemon's state for systemd's Type=notify
 * (daemon/sdnotify.c).
 */
#ifndef MXB_SDNOTIFY_H
#define MXB_SDNOTIFY_H

/* connect to $NOTIFY_SOCKET, if set; at start, before the drop */
void	sdnotify_open(void);
/* one state datagram ("READY=1", "RELOADING=1", ...); none without it */
void	sdnotify(const char *);

#endif
