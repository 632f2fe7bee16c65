/* addr.h - socket address formatting, parsing and network matching */
#ifndef MXB_ADDR_H
#define MXB_ADDR_H
#include <sys/socket.h>
#include <netinet/in.h>
#include <stdint.h>

#define ADDR_STRLEN	64	/* "[v6]:port" fits */

struct addr_net {
	int		family;		/* AF_INET or AF_INET6 */
	uint8_t		addr[16];
	unsigned	prefixlen;
};

const char	*addr_fmt(const struct sockaddr *, char *, size_t);
const char	*addr_fmt_ip(const struct sockaddr *, char *, size_t);
uint16_t	 addr_port(const struct sockaddr *);
socklen_t	 addr_len(const struct sockaddr *);
int		 addr_parse(const char *, uint16_t, struct sockaddr_storage *);
int		 addr_net_parse(const char *, struct addr_net *);
int		 addr_net_match(const struct addr_net *, const struct sockaddr *);
int		 addr_equal_ip(const struct sockaddr *, const struct sockaddr *);
void		 addr_unmap(struct sockaddr_storage *);
struct ifaddrs;
int		 addr_is_self_in(const struct sockaddr *, const struct ifaddrs *);
int		 addr_is_self(const struct sockaddr *);	/* event loop only */

#endif
