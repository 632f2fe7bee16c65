#!/usr/bin/env bash
# mxbridge network-namespace testbed.
#
#   test/testbed.sh up|down|status [NAME]
#
# NAME defaults to $MXB_TB or "mxbtb".  Every namespace is "$NAME-<node>",
# the state lives in ${MXB_TB_DIR:-/tmp/mxbtb-$NAME}.  See test/README.testbed.
#
# This file can also be sourced (test/lib.sh does): it then only defines the
# address variables and the tbd_* helper functions and runs nothing.

# ---------------------------------------------------------------- addresses
# Documentation prefixes only (RFC 5737 / RFC 3849).  One flat /24 and /64.
# (used by the scripts that source this file)
# shellcheck disable=SC2034
TB_PREFIX4=192.0.2.0/24
TB_PREFIX6=2001:db8:2::/64
TB_C1_IP4=192.0.2.101
TB_C1_IP6=2001:db8:2::101
TB_C2_IP4=192.0.2.102
TB_BOX_IP4=192.0.2.2          # management address on box br0
TB_BOX_IP6=2001:db8:2::2
TB_SRV_IP4=192.0.2.10         # protected server, mx.example.com (Postfix)
TB_SRV_IP6=2001:db8:2::10
TB_EXT_IP4=192.0.2.20         # unprotected SMTP server ext.example.net (sink)
TB_EXT_IP6=2001:db8:2::20
TB_MX_IP4=192.0.2.21          # mx.example.net, MX of example.net (sink)
TB_RELAY_IP4=192.0.2.30       # relay.example.org (sink)
TB_DNS_IP4=192.0.2.53         # dnsmasq

TB_NODES="c1 c2 swl box swr srv out"
TB_HOST_NODES="c1 c2 box srv out"   # nodes with addresses

# v4 and v6 addresses of each host node (used by the reachability check)
tbd_addrs4() {
	case $1 in
	c1) echo "$TB_C1_IP4" ;;
	c2) echo "$TB_C2_IP4" ;;
	box) echo "$TB_BOX_IP4" ;;
	srv) echo "$TB_SRV_IP4" ;;
	out) echo "$TB_EXT_IP4 $TB_MX_IP4 $TB_RELAY_IP4 $TB_DNS_IP4" ;;
	esac
}
tbd_addrs6() {
	case $1 in
	c1) echo "$TB_C1_IP6" ;;
	box) echo "$TB_BOX_IP6" ;;
	srv) echo "$TB_SRV_IP6" ;;
	out) echo "$TB_EXT_IP6" ;;
	esac
}

# ---------------------------------------------------------------- helpers
tbd_msg() { [ -n "${TBD_QUIET:-}" ] || echo "testbed[$TBD_NAME]: $*" >&2; }
tbd_die() { echo "testbed[$TBD_NAME]: error: $*" >&2; exit 1; }

# tbd_setname NAME: sets TBD_NAME, TBD_STATE
tbd_setname() {
	TBD_NAME=${1:-${MXB_TB:-mxbtb}}
	case $TBD_NAME in
	''|*[!A-Za-z0-9_]*) echo "testbed: bad name '$TBD_NAME' (use [A-Za-z0-9_])" >&2; return 1 ;;
	esac
	if [ ${#TBD_NAME} -gt 24 ]; then
		echo "testbed: name '$TBD_NAME' too long (max 24)" >&2; return 1
	fi
	TBD_STATE=${MXB_TB_DIR:-/tmp/mxbtb-$TBD_NAME}
}

tbd_ns() { echo "$TBD_NAME-$1"; }
tbd_nsx() { local n=$1; shift; ip netns exec "$TBD_NAME-$n" "$@"; }
tbd_ns_exists() { [ -e "/run/netns/$TBD_NAME-$1" ]; }

# is PID alive and inside the namespace of NODE?
tbd_pid_in_ns() {
	local pid=$1 node=$2
	case $pid in ''|*[!0-9]*) return 1 ;; esac
	[ -e "/proc/$pid" ] || return 1
	[ "/proc/$pid/ns/net" -ef "/run/netns/$TBD_NAME-$node" ] 2>/dev/null
}

# record a daemon's pid: $STATE/pids/<node>.<what>.pid
tbd_record_pid() { echo "$3" >"$TBD_STATE/pids/$1.$2.pid"; }

# wait (up to $1 tenths of a second) for "$@" to succeed
tbd_wait() {
	local n=$1; shift
	while ! "$@" >/dev/null 2>&1; do
		n=$((n - 1))
		[ $n -gt 0 ] || return 1
		sleep 0.1
	done
}

# ICMP echo check, no ping(8) needed: python3 raw sockets inside the namespace.
# tbd_pingall NODE ADDR... : exits non-zero and names the unreachable ones.
TBD_PING_PY='
import os, socket, struct, sys, time, select
targets = sys.argv[1:]
ident = os.getpid() & 0xffff
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
s4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
pending = {}
errs = {}
for t in targets:
    pending[socket.inet_pton(socket.AF_INET6 if ":" in t else socket.AF_INET, t)] = t
deadline = time.time() + 3.0
seq = 0
while pending and time.time() < deadline:
    seq += 1
    for raw, t in list(pending.items()):
        try:
            if ":" in t:
                pkt = struct.pack("!BBHHH", 128, 0, 0, ident, seq) + b"mxbtb"
                s6.sendto(pkt, (t, 0))
            else:
                hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"mxbtb"
                pkt = struct.pack("!BBHHH", 8, 0, csum(hdr), ident, seq) + b"mxbtb"
                s4.sendto(pkt, (t, 0))
        except OSError as e:
            errs[t] = e.strerror
    end = min(deadline, time.time() + 0.25)
    while pending and time.time() < end:
        r, _, _ = select.select([s4, s6], [], [], max(0, end - time.time()))
        for s in r:
            data, addr = s.recvfrom(2048)
            if s is s4:
                ihl = (data[0] & 15) * 4
                typ, _, _, pid = struct.unpack("!BBHH", data[ihl:ihl + 6])
                if typ == 0 and pid == ident:
                    pending.pop(socket.inet_pton(socket.AF_INET, addr[0]), None)
            else:
                typ, _, _, pid = struct.unpack("!BBHH", data[:6])
                if typ == 129 and pid == ident:
                    pending.pop(socket.inet_pton(socket.AF_INET6, addr[0].split("%")[0]), None)
if pending:
    print("unreachable: " + " ".join(t + (" (sendto: %s)" % errs[t] if t in errs else "")
                                      for t in sorted(pending.values())))
    sys.exit(1)
'
tbd_pingall() {
	local node=$1; shift
	tbd_nsx "$node" python3 -c "$TBD_PING_PY" "$@"
}

# tbd_links_ready: the network is usable, not just configured.  "ip link set
# up" and "addr add ... nodad" return before the kernel acts on them: operstate
# and a bridge port's move to forwarding come from linkwatch, a work item
# shared by the whole machine and rate-limited (about once a second when
# other testbeds are creating links), and IPv6 keeps an address tentative and
# makes no link-local address until the link is operationally up.  Checking
# reachability before that fails or errors (sendto EINVAL/EADDRNOTAVAIL) on a
# busy machine, so wait for the real conditions.  Sets TBD_WHY.
tbd_links_ready() {
	local node ns line
	for node in $TB_NODES; do
		ns=$TBD_NAME-$node
		# every link (lo aside) operationally up
		while read -r line; do
			case $line in
			*" lo:"*|*"state UP"*) ;;
			*) TBD_WHY="$ns: link not up: ${line%%<*}${line##*state }"; return 1 ;;
			esac
		done < <(ip -n "$ns" -o link show)
		# every bridge port forwarding
		while read -r line; do
			case $line in
			*"state forwarding"*) ;;
			*) TBD_WHY="$ns: bridge port not forwarding: $line"; return 1 ;;
			esac
		done < <(bridge -n "$ns" link show)
		# no IPv6 address tentative (nodad or not, one waits for link-up)
		line=$(ip -n "$ns" -o -6 addr show tentative)
		[ -z "$line" ] || { TBD_WHY="$ns: address tentative: $line"; return 1; }
	done
	# the host nodes' link-local addresses exist (neighbour discovery)
	for node in c1 c2 srv out; do
		[ -n "$(ip -n "$TBD_NAME-$node" -o -6 addr show dev eth0 scope link)" ] ||
			{ TBD_WHY="$TBD_NAME-$node: no link-local address on eth0"; return 1; }
	done
	[ -n "$(ip -n "$TBD_NAME-box" -o -6 addr show dev br0 scope link)" ] ||
		{ TBD_WHY="$TBD_NAME-box: no link-local address on br0"; return 1; }
	TBD_WHY=
}

# every host node reaches every other host node (v4; v6 where both have it)
tbd_check_reach() {
	local src dst targets bad=0 out
	for src in $TB_HOST_NODES; do
		targets=
		for dst in $TB_HOST_NODES; do
			[ "$src" = "$dst" ] && continue
			targets="$targets $(tbd_addrs4 "$dst")"
			[ -n "$(tbd_addrs6 "$src")" ] && targets="$targets $(tbd_addrs6 "$dst")"
		done
		# shellcheck disable=SC2086
		if ! out=$(tbd_pingall "$src" $targets 2>&1); then
			echo "testbed[$TBD_NAME]: from $src: $out" >&2
			bad=1
		fi
	done
	return $bad
}

# is something listening on TCP ADDR:PORT / UDP in NODE?
tbd_listening_tcp() { tbd_nsx "$1" ss -Hltn "( sport = :$3 )" 2>/dev/null | grep -qF "$2"; }
tbd_listening_udp() { tbd_nsx "$1" ss -Hlun "( sport = :$3 )" 2>/dev/null | grep -qF "$2"; }

# ---------------------------------------------------------------- down
tbd_kill_pidfiles() {
	local sig=$1 f base node pid
	for f in "$TBD_STATE"/pids/*.pid; do
		[ -e "$f" ] || continue
		base=${f##*/}; node=${base%%.*}
		pid=$(tr -dc 0-9 <"$f")
		if tbd_pid_in_ns "$pid" "$node"; then
			kill "-$sig" "$pid" 2>/dev/null
		fi
	done
}

tbd_pidfiles_alive() {
	local f base node pid
	for f in "$TBD_STATE"/pids/*.pid; do
		[ -e "$f" ] || continue
		base=${f##*/}; node=${base%%.*}
		pid=$(tr -dc 0-9 <"$f")
		tbd_pid_in_ns "$pid" "$node" && return 0
	done
	return 1
}

tbd_ns_pids() {
	local node pids=
	for node in $TB_NODES; do
		tbd_ns_exists "$node" || continue
		pids="$pids $(ip netns pids "$TBD_NAME-$node" 2>/dev/null)"
	done
	# shellcheck disable=SC2086
	echo $pids
}

tbd_down() {
	local node pids
	# 1. Postfix the polite way (master stops its children).
	if [ -f "$TBD_STATE/srv/etc/main.cf" ] && tbd_ns_exists srv &&
	   [ -f "$TBD_STATE/pids/srv.postfix.pid" ] &&
	   tbd_pid_in_ns "$(tr -dc 0-9 <"$TBD_STATE/pids/srv.postfix.pid")" srv; then
		tbd_nsx srv postfix -c "$TBD_STATE/srv/etc" stop >/dev/null 2>&1 || true
	fi
	# 2. Every daemon we recorded, by pid, only if it still is in our netns.
	if [ -d "$TBD_STATE/pids" ]; then
		tbd_kill_pidfiles TERM
		tbd_wait 30 eval '! tbd_pidfiles_alive' || tbd_kill_pidfiles KILL
	fi
	# 3. Whatever else still lives in our namespaces (postfix children,
	#    a daemon a test started): by pid, scoped to our namespaces.
	pids=$(tbd_ns_pids)
	if [ -n "$pids" ]; then
		# shellcheck disable=SC2086
		kill -TERM $pids 2>/dev/null
		# shellcheck disable=SC2016
		tbd_wait 20 eval '[ -z "$(tbd_ns_pids)" ]' || {
			pids=$(tbd_ns_pids)
			# shellcheck disable=SC2086
			[ -z "$pids" ] || kill -KILL $pids 2>/dev/null
			# shellcheck disable=SC2016
			tbd_wait 20 eval '[ -z "$(tbd_ns_pids)" ]' ||
				echo "testbed[$TBD_NAME]: warning: processes left: $(tbd_ns_pids)" >&2
		}
	fi
	# 4. Namespaces (their veths and bridges go with them).
	for node in $TB_NODES; do
		tbd_ns_exists "$node" && ip netns del "$TBD_NAME-$node" 2>/dev/null
		rm -rf "/etc/netns/$TBD_NAME-$node"
	done
	# 5. State.
	#    (a state dir given by MXB_TB_DIR is only wiped whole if it is ours)
	if [ "$TBD_STATE" = "/tmp/mxbtb-$TBD_NAME" ] ||
	   [ "$(cat "$TBD_STATE/owner" 2>/dev/null)" = "$TBD_NAME" ]; then
		rm -rf "$TBD_STATE"
	elif [ -d "$TBD_STATE" ]; then
		rm -rf "$TBD_STATE/pids" "$TBD_STATE/out" "$TBD_STATE/srv" "$TBD_STATE/up" \
			"$TBD_STATE/env" "$TBD_STATE/name" "$TBD_STATE/mxbridge.log" \
			"$TBD_STATE/swaks.out" "$TBD_STATE/smtp.out"
		rmdir "$TBD_STATE" 2>/dev/null
	fi
	return 0
}

# ---------------------------------------------------------------- up
tbd_sysctl() {
	local node=$1; shift
	tbd_nsx "$node" sysctl -q -e -w "$@" >/dev/null 2>&1 || true
}

# tbd_neigh_limits: machine-wide neighbour table limits room for several
# testbeds of a few thousand clients each (raised only)
tbd_neigh_limits() {
	local fam f want cur
	for fam in ipv4 ipv6; do
		for f in gc_thresh2:8192 gc_thresh3:16384; do
			want=${f#*:}; f=/proc/sys/net/$fam/neigh/default/${f%%:*}
			cur=$(cat "$f" 2>/dev/null) || continue
			[ "$cur" -ge "$want" ] 2>/dev/null || echo "$want" >"$f" 2>/dev/null || true
		done
	done
}

tbd_veth() {   # tbd_veth NODE_A IF_A NODE_B IF_B
	ip link add "$2" netns "$TBD_NAME-$1" type veth peer name "$4" netns "$TBD_NAME-$3" ||
		tbd_die "veth $1:$2 <-> $3:$4"
}

tbd_bridge() {  # tbd_bridge NODE BR PORT...
	local node=$1 br=$2 p; shift 2
	ip -n "$TBD_NAME-$node" link add "$br" type bridge stp_state 0 forward_delay 0 \
		mcast_snooping 0 || tbd_die "bridge $node:$br"
	for p in "$@"; do
		ip -n "$TBD_NAME-$node" link set "$p" master "$br" up || tbd_die "port $node:$p"
	done
	ip -n "$TBD_NAME-$node" link set "$br" up
}

tbd_write_postfix() {
	local d=$TBD_STATE/srv
	mkdir -p "$d/etc" "$d/queue" "$d/data" "$d/mail"
	chown postfix: "$d/data"
	chown nobody:nogroup "$d/mail"
	cat >"$d/etc/main.cf" <<EOF
# Postfix of the mxbridge testbed node srv (mx.example.com). Generated.
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.example.com
mydomain = example.com
myorigin = example.com
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 local delivery disabled in the testbed
alias_maps =
alias_database =
inet_interfaces = all
inet_protocols = all
mynetworks = 127.0.0.0/8 $TB_PREFIX4 [::1]/128 [2001:db8:2::]/64
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relay_domains =
smtpd_banner = \$myhostname ESMTP testbed
# virtual mailboxes: Maildirs under $d/mail
virtual_mailbox_domains = example.com
virtual_mailbox_base = $d/mail
virtual_mailbox_maps = texthash:$d/vmailbox
virtual_alias_maps =
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
unknown_virtual_mailbox_reject_code = 550
# never leave the testbed: no DNS, anything not local goes nowhere unless a
# test adds a route to $d/transport (texthash, then "postfix reload")
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtpd_peername_lookup = no
transport_maps = texthash:$d/transport
default_transport = error:4.4.1 no outside delivery in the testbed
relay_transport = error:4.4.1 no outside delivery in the testbed
# fast
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 100
smtpd_hard_error_limit = 100
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 10s
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
delay_warning_time = 0h
in_flow_delay = 0
biff = no
append_dot_mydomain = no
readme_directory = no
# logging
maillog_file_prefixes = $d
maillog_file = $d/maillog
EOF
	cat >"$d/etc/master.cf" <<'EOF'
# service type  private unpriv  chroot  wakeup  maxproc command
smtp      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
	cat >"$d/vmailbox" <<'EOF'
alice@example.com       alice/
bob@example.com         bob/
postmaster@example.com  postmaster/
EOF
	cat >"$d/transport" <<'EOF'
# texthash transport map of the testbed Postfix, e.g.
#   example.net   smtp:[192.0.2.21]
EOF
	touch "$d/maillog"
}

tbd_start_sink() {  # tbd_start_sink TAG LISTEN HELO DIR
	local tag=$1 listen=$2 helo=$3 dir=$4 pid
	mkdir -p "$dir"
	chown nobody:nogroup "$dir"
	ip netns exec "$TBD_NAME-out" smtp-sink -u nobody -h "$helo" \
		-d "$dir/%Y%m%d%H%M%S.$tag." "$listen" 64 \
		</dev/null >"$TBD_STATE/out/$tag.log" 2>&1 &
	pid=$!
	tbd_record_pid out "sink-$tag" "$pid"
}

tbd_up() {
	local node d=$TBD_STATE pid

	# "owner" marks a state dir we created (down may then wipe it whole)
	if [ ! -e "$d" ]; then
		mkdir -p "$d" || tbd_die "cannot create $d"
		echo "$TBD_NAME" >"$d/owner"
	fi
	mkdir -p "$d/pids" "$d/out" "$d/srv" || tbd_die "cannot create $d"
	echo "$TBD_NAME" >"$d/name"

	# The neighbour tables (ARP, NDP) are one per machine, shared by every
	# namespace, and only the initial namespace may size them.  At the
	# default gc_thresh3 of 1024 one testbed whose clients use many addresses
	# (t-proxy-clientlimit-v6: 2000) fills the IPv6 table and every other
	# testbed's next neighbour entry fails ("neighbor table overflow",
	# sendto EINVAL) until the entries age out.  Raise the limits, never lower.
	tbd_neigh_limits
	# namespaces, loopback, sysctls that must precede interface creation
	for node in $TB_NODES; do
		ip netns add "$TBD_NAME-$node" || tbd_die "netns add $TBD_NAME-$node"
		tbd_sysctl "$node" net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
			net.ipv6.conf.default.dad_transmits=0 net.ipv6.conf.all.dad_transmits=0 \
			net.ipv6.conf.default.accept_ra=0 net.ipv6.conf.all.accept_ra=0 \
			net.ipv6.conf.default.router_solicitations=0
		ip -n "$TBD_NAME-$node" link set lo up
	done
	# the appliance: load br_netfilter so its sysctls exist, then switch it off
	[ -e /proc/sys/net/bridge ] || modprobe br_netfilter >/dev/null 2>&1 || true
	tbd_sysctl box net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
		net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0 \
		net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 \
		net.bridge.bridge-nf-call-arptables=0

	# links, created directly inside the namespaces
	tbd_veth c1 eth0 swl c1
	tbd_veth c2 eth0 swl c2
	tbd_veth swl box box p0
	tbd_veth box p1 swr box
	tbd_veth srv eth0 swr srv
	tbd_veth out eth0 swr out
	tbd_bridge swl sw c1 c2 box
	tbd_bridge box br0 p0 p1
	tbd_bridge swr sw box srv out
	tbd_sysctl box net.ipv4.conf.br0.send_redirects=0

	# addresses (nodad: usable at once); no routes beyond the on-link ones
	ip -n "$TBD_NAME-box" addr add "$TB_BOX_IP4/24" dev br0
	ip -n "$TBD_NAME-box" addr add "$TB_BOX_IP6/64" dev br0 nodad
	for node in c1 c2 srv out; do
		ip -n "$TBD_NAME-$node" link set eth0 up
	done
	ip -n "$TBD_NAME-c1" addr add "$TB_C1_IP4/24" dev eth0
	ip -n "$TBD_NAME-c1" addr add "$TB_C1_IP6/64" dev eth0 nodad
	ip -n "$TBD_NAME-c2" addr add "$TB_C2_IP4/24" dev eth0
	ip -n "$TBD_NAME-srv" addr add "$TB_SRV_IP4/24" dev eth0
	ip -n "$TBD_NAME-srv" addr add "$TB_SRV_IP6/64" dev eth0 nodad
	for a in $TB_EXT_IP4 $TB_MX_IP4 $TB_RELAY_IP4 $TB_DNS_IP4; do
		ip -n "$TBD_NAME-out" addr add "$a/24" dev eth0
	done
	ip -n "$TBD_NAME-out" addr add "$TB_EXT_IP6/64" dev eth0 nodad

	# resolver of the appliance
	mkdir -p "/etc/netns/$TBD_NAME-box"
	echo "nameserver $TB_DNS_IP4" >"/etc/netns/$TBD_NAME-box/resolv.conf"

	# DNS on out
	ip netns exec "$TBD_NAME-out" dnsmasq -C /dev/null --keep-in-foreground \
		--no-resolv --no-hosts --no-poll --bind-interfaces \
		--listen-address="$TB_DNS_IP4" --port=53 \
		--pid-file="$d/out/dnsmasq.pid" --user=nobody --group=nogroup \
		--log-facility="$d/out/dnsmasq.log" --log-queries \
		--local=/example.com/ --local=/example.net/ --local=/example.org/ \
		--mx-host=example.com,mx.example.com,10 \
		--host-record=mx.example.com,$TB_SRV_IP4,$TB_SRV_IP6 \
		--mx-host=example.net,mx.example.net,10 \
		--host-record=mx.example.net,$TB_MX_IP4 \
		--host-record=ext.example.net,$TB_EXT_IP4,$TB_EXT_IP6 \
		--host-record=relay.example.org,$TB_RELAY_IP4 \
		--host-record=example.org,$TB_MX_IP4 \
		</dev/null >"$d/out/dnsmasq.out" 2>&1 &
	tbd_record_pid out dnsmasq $!

	# SMTP sinks on out
	tbd_start_sink ext20 "$TB_EXT_IP4:25" ext.example.net "$d/out/ext20"
	tbd_start_sink ext20v6 "[$TB_EXT_IP6]:25" ext.example.net "$d/out/ext20"
	tbd_start_sink mx21 "$TB_MX_IP4:25" mx.example.net "$d/out/mx21"
	tbd_start_sink relay30 "$TB_RELAY_IP4:25" relay.example.org "$d/out/relay30"

	# Postfix on srv
	tbd_write_postfix
	tbd_nsx srv postfix -c "$d/srv/etc" start >"$d/srv/postfix-start.log" 2>&1 ||
		tbd_die "postfix start failed: $(tail -n 3 "$d/srv/postfix-start.log")"
	pid=$(tr -dc 0-9 2>/dev/null <"$d/srv/queue/pid/master.pid")
	[ -n "$pid" ] || tbd_die "postfix: no master.pid"
	tbd_record_pid srv postfix "$pid"

	tbd_env >"$d/env"

	tbd_wait_services || tbd_die "services did not come up: $TBD_WHY"
	tbd_wait 100 tbd_links_ready || { tbd_links_ready; tbd_die "links not ready: $TBD_WHY"; }
	tbd_check_reach || tbd_die "reachability check failed"
	touch "$d/up"
	tbd_msg "up (state $d)"
}

tbd_env() {
	cat <<EOF
TB_NAME=$TBD_NAME
TB_STATE=$TBD_STATE
TB_MAILDIR=$TBD_STATE/srv/mail
TB_MAILLOG=$TBD_STATE/srv/maillog
TB_POSTFIX_CONF=$TBD_STATE/srv/etc
TB_EXT_DIR=$TBD_STATE/out/ext20
TB_MX_DIR=$TBD_STATE/out/mx21
TB_RELAY_DIR=$TBD_STATE/out/relay30
EOF
}

# all daemons alive (pid files) and listening
tbd_services_ok() {
	local f
	for f in out.dnsmasq out.sink-ext20 out.sink-ext20v6 out.sink-mx21 out.sink-relay30 srv.postfix; do
		case $f in
		out.sink-*) TBD_WHY="smtp-sink ${f#out.sink-} is not running: $(tail -n 1 "$TBD_STATE/out/${f#out.sink-}.log" 2>/dev/null)" ;;
		out.dnsmasq) TBD_WHY="dnsmasq is not running: $(tail -n 1 "$TBD_STATE/out/dnsmasq.out" 2>/dev/null)" ;;
		*) TBD_WHY="$f is not running: $(tail -n 1 "$TBD_STATE/srv/maillog" 2>/dev/null)" ;;
		esac
		tbd_pid_in_ns "$(tr -dc 0-9 2>/dev/null <"$TBD_STATE/pids/$f.pid")" "${f%%.*}" || return 1
	done
	TBD_WHY="dnsmasq not listening"
	tbd_listening_udp out "$TB_DNS_IP4:53" 53 || return 1
	for f in "$TB_EXT_IP4:25" "[$TB_EXT_IP6]:25" "$TB_MX_IP4:25" "$TB_RELAY_IP4:25"; do
		TBD_WHY="no smtp-sink listening on $f"
		tbd_listening_tcp out "$f" 25 || return 1
	done
	TBD_WHY="postfix not listening"
	tbd_listening_tcp srv ":25" 25 || return 1
	TBD_WHY=
}
tbd_wait_services() { tbd_wait 100 tbd_services_ok; }

# quiet health check: 0 = fully up
tbd_healthy() {
	local node
	[ -f "$TBD_STATE/up" ] || return 1
	for node in $TB_NODES; do tbd_ns_exists "$node" || return 1; done
	tbd_services_ok
}

tbd_status() {
	local node f base pid st rc=0
	echo "testbed $TBD_NAME, state $TBD_STATE"
	for node in $TB_NODES; do
		if tbd_ns_exists "$node"; then echo "  netns $TBD_NAME-$node: present"
		else echo "  netns $TBD_NAME-$node: MISSING"; rc=1; fi
	done
	for f in "$TBD_STATE"/pids/*.pid; do
		[ -e "$f" ] || continue
		base=${f##*/}; node=${base%%.*}; base=${base%.pid}
		pid=$(tr -dc 0-9 <"$f")
		if tbd_pid_in_ns "$pid" "$node"; then st=running; else st=DEAD; rc=1; fi
		echo "  ${base#*.} (node $node, pid $pid): $st"
	done
	if [ $rc = 0 ]; then
		if tbd_services_ok; then echo "  listeners: ok"; else echo "  listeners: NOT OK"; rc=1; fi
		if tbd_check_reach; then echo "  reachability: ok"; else echo "  reachability: FAILED"; rc=1; fi
	fi
	[ -f "$TBD_STATE/up" ] || { echo "  not marked up"; rc=1; }
	if [ $rc = 0 ]; then echo "status: up"; else echo "status: down or broken"; fi
	return $rc
}

tbd_main() {
	set -u -o pipefail
	umask 022
	local cmd=${1:-}
	[ $# -gt 0 ] && shift
	[ $# -le 1 ] || { echo "usage: $0 up|down|status [NAME]" >&2; exit 2; }
	tbd_setname "${1:-}" || exit 2
	[ "$(id -u)" = 0 ] || tbd_die "must run as root"
	export PATH="$PATH:/usr/sbin:/sbin"
	case $cmd in
	up)
		if tbd_healthy; then tbd_msg "already up"; exit 0; fi
		tbd_down
		tbd_up
		;;
	down)
		tbd_down
		tbd_msg "down"
		;;
	status)
		tbd_status
		;;
	env)
		tbd_env
		;;
	*)
		echo "usage: $0 up|down|status [NAME]" >&2
		exit 2
		;;
	esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	tbd_main "$@"
fi
