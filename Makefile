# mxbridge - transparent SMTP gateway for an inline Linux bridge
#
#   make            build mxbridge and mxbridgectl into $(O)
#   make asan       the same with AddressSanitizer + UBSan into build-asan/
#   make check      unit + end-to-end tests, then again under the sanitizers
#   make demo       testbed, daemon, mail both ways, what happened
#   make bench      side-by-side performance figures
#   make install    binaries, mxbridge-netfilter, man pages, systemd units,
#                   an example /etc/mxbridge/mxbridge.conf (kept if present)
#                   and the spool; PREFIX (/usr/local), DESTDIR, SBINDIR,
#                   MANDIR, SYSCONFDIR (/etc), UNITDIR, SPOOLDIR
#   make deb        the Debian package mxbridge_VERSION_ARCH.deb (debian/)
#   make fuzz       libFuzzer targets (test/fuzz/fuzz_NAME.c, clang, ASan+UBSan)
#                   into build-fuzz/, each run FUZZ_SECONDS (60) on its seed
#                   corpus test/fuzz/corpus/NAME; new inputs go to
#                   FUZZ_OUT (build-fuzz/out), into the tree with FUZZ_MERGE=1
#
# O= selects the build directory, so several builds can share the tree.

O	?= build
PREFIX	?= /usr/local
SBINDIR	?= $(PREFIX)/sbin
MANDIR	?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR	?= $(PREFIX)/lib/systemd/system
SPOOLDIR ?= /var/spool/mxbridge
VERSION	 = 0.1.0
PKGS	 = libuv openssl ldns libnetfilter_queue libmnl libnftables libseccomp libcap-ng

CC	?= cc
CFLAGS	?= -O2 -g
WARN	 = -Wall -Wextra -Wshadow -Wpointer-arith -Wstrict-prototypes \
	   -Wmissing-prototypes -Wmissing-declarations -Wformat=2 \
	   -Wno-unused-parameter -Wcast-qual -Wwrite-strings
ifdef WERROR
WARN	+= -Werror
endif
CPPFLAGS += -D_GNU_SOURCE -DMXB_VERSION=\"$(VERSION)\" \
	    $(shell pkg-config --cflags $(PKGS))
ALLCFLAGS = -std=gnu11 $(WARN) $(CFLAGS) $(SANFLAGS) -MMD -MP
LDLIBS	+= $(shell pkg-config --libs $(PKGS))

COMMON_SRCS = \
	common/addr.c \
	common/buf.c \
	common/hash.c \
	common/histogram.c \
	common/ifname.c \
	common/log.c \
	common/smtp.c \
	common/smtpc.c \
	common/tls.c \
	common/xmalloc.c

POLICY_SRCS = \
	policy/decide.c \
	policy/parse.c \
	policy/policy.c

NFQ_SRCS = \
	nfq/kernel.c \
	nfq/nfq.c \

PROXY_SRCS = \
	proxy/callout.c \
	proxy/clients.c \
	proxy/listener.c \
	proxy/milter.c \
	proxy/sink_queue.c \
	proxy/sink_relay.c \
	proxy/smtpd.c \

MTA_SRCS = \
	mta/admin.c \
	mta/deliver.c \
	mta/dns.c \
	mta/dsn.c \
	mta/envelope.c \
	mta/mta.c \
	mta/queue.c \
	mta/spool.c \

DAEMON_SRCS = \
	daemon/control.c \
	daemon/metrics.c \
	daemon/mxbridge.c \
	daemon/pidfile.c \
	daemon/priv.c \
	daemon/sdnotify.c \
	daemon/worker.c

CTL_SRCS = \
	ctl/mxbridgectl.c \
	daemon/control.c

UNIT_TESTS = \
	test_policy \
	test_smtp \
	test_nfq \
	test_mta \
	test_daemon \
	test_clients \
	test_milter \
	test_tls

MXB_SRCS = $(DAEMON_SRCS) $(NFQ_SRCS) $(PROXY_SRCS) $(MTA_SRCS) \
	   $(POLICY_SRCS) $(COMMON_SRCS)
CTLB_SRCS = $(CTL_SRCS) $(POLICY_SRCS) $(COMMON_SRCS)

objs	 = $(patsubst %.c,$(O)/%.o,$(1))

all: $(O)/mxbridge $(O)/mxbridgectl

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLCFLAGS) -c -o $@ $<

$(O)/mxbridge: $(call objs,$(MXB_SRCS))
	$(CC) $(ALLCFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(O)/mxbridgectl: $(call objs,$(CTLB_SRCS))
	$(CC) $(ALLCFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# unit tests: test/unit/NAME.c linked with every module but the daemon's main
LIB_SRCS = $(filter-out daemon/mxbridge.c,$(MXB_SRCS))
$(O)/test/%: $(O)/test/unit/%.o $(call objs,$(LIB_SRCS))
	$(CC) $(ALLCFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(shell pkg-config --libs cmocka)

units: $(addprefix $(O)/test/,$(UNIT_TESTS))

asan:
	$(MAKE) O=build-asan SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all units

deps:
	sh scripts/install-deps.sh

# the fuzzers are built (a target that does not build is a failed test in
# check.sh's summary, so -k and no stop here) and run a few seconds each
check: deps
	$(MAKE) WERROR=1 all units
	$(MAKE) WERROR=1 asan
	-$(MAKE) -k WERROR=1 fuzzers
	MXB_FUZZ=build-fuzz sh test/check.sh build build-asan

# fuzzing: the library objects built by clang with coverage hooks and the
# sanitizers into build-fuzz/, in an archive so that a target that includes
# a module's .c to reach its static parsers replaces that module's object;
# each test/fuzz/fuzz_NAME.c is linked with libFuzzer's main
FUZZ_CC	 ?= clang
FUZZ_SAN  = -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	    -fno-omit-frame-pointer
FUZZ_NAMES = $(patsubst test/fuzz/fuzz_%.c,%,$(wildcard test/fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 60
FUZZ_OUT ?= build-fuzz/out

fuzzers:
	$(MAKE) O=build-fuzz CC=$(FUZZ_CC) \
	    SANFLAGS="-fsanitize=fuzzer-no-link $(FUZZ_SAN)" \
	    $(addprefix build-fuzz/fuzz_,$(FUZZ_NAMES))

# OpenSSL's SSL_set_tlsext_host_name() macro casts its const argument to
# void *; clang reports that inside the macro, gcc does not
build-fuzz/common/tls.o: WARN += -Wno-cast-qual

$(O)/libmxb.a: $(call objs,$(LIB_SRCS))
	rm -f $@
	ar rcs $@ $^

$(O)/fuzz_%: $(O)/test/fuzz/fuzz_%.o $(O)/libmxb.a
	$(CC) $(ALLCFLAGS) -fsanitize=fuzzer $(LDFLAGS) -o $@ $^ $(LDLIBS)

fuzz: fuzzers
	FUZZ_MERGE=$(FUZZ_MERGE) sh test/fuzz/run.sh build-fuzz \
	    test/fuzz/corpus $(FUZZ_OUT) $(FUZZ_SECONDS) 1

demo: deps all
	bash test/demo.sh

bench: deps all
	bash test/bench.sh

lint:
	mandoc -Tlint -Wwarning man/*.[58]

# install: DESTDIR stages; the paths inside the units and the example
# configuration are the final ones (without DESTDIR)
SUBST	= sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	      -e 's|@SPOOLDIR@|$(SPOOLDIR)|g'
install: all
	install -d -m 0755 $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man5 \
	    $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(SYSCONFDIR)/mxbridge $(DESTDIR)$(SYSCONFDIR)/default
	install -d -m 0700 $(DESTDIR)$(SPOOLDIR)
	install -m 0755 $(O)/mxbridge $(O)/mxbridgectl \
	    scripts/mxbridge-netfilter $(DESTDIR)$(SBINDIR)
	install -m 0644 man/mxbridge.conf.5 $(DESTDIR)$(MANDIR)/man5
	install -m 0644 man/mxbridge.8 man/mxbridgectl.8 \
	    man/mxbridge-netfilter.8 $(DESTDIR)$(MANDIR)/man8
	for u in mxbridge mxbridge-netfilter; do \
	    $(SUBST) scripts/systemd/$$u.service.in > $(DESTDIR)$(UNITDIR)/$$u.service.tmp && \
	    chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.service.tmp && \
	    mv $(DESTDIR)$(UNITDIR)/$$u.service.tmp $(DESTDIR)$(UNITDIR)/$$u.service || exit 1; \
	done
	test -e $(DESTDIR)$(SYSCONFDIR)/mxbridge/mxbridge.conf || { \
	    $(SUBST) scripts/systemd/mxbridge.conf.example > $(DESTDIR)$(SYSCONFDIR)/mxbridge/mxbridge.conf && \
	    chmod 0640 $(DESTDIR)$(SYSCONFDIR)/mxbridge/mxbridge.conf; }
	test -e $(DESTDIR)$(SYSCONFDIR)/default/mxbridge || \
	    install -m 0644 scripts/systemd/mxbridge.default $(DESTDIR)$(SYSCONFDIR)/default/mxbridge
	@# the daemon runs as _mxbridge: its spool, and its configuration
	@# readable by its group (a package build, with DESTDIR, leaves that
	@# to the package's postinst)
	if [ -z "$(DESTDIR)" ] && getent passwd _mxbridge >/dev/null; then \
	    chown _mxbridge:_mxbridge $(SPOOLDIR) && \
	    chgrp _mxbridge $(SYSCONFDIR)/mxbridge/mxbridge.conf; \
	fi

# deb: the Debian package (debian/, debhelper) into mxbridge_VERSION_ARCH.deb
# at the top of the tree.  dpkg-buildpackage runs in build-deb/src, a copy
# of the tracked files as they are in the working tree (edits included),
# so nothing of the build lands in the tree; debian/changelog must name
# this VERSION.
DEB	 = mxbridge_$(VERSION)_$(shell dpkg --print-architecture 2>/dev/null).deb
deb:
	@v=$$(dpkg-parsechangelog -l debian/changelog -S Version) && \
	    [ "$$v" = "$(VERSION)" ] || \
	    { echo "deb: debian/changelog says $$v, the Makefile $(VERSION)" >&2; exit 1; }
	rm -rf build-deb
	mkdir -p build-deb/src
	git ls-files -z | tar --null -T - --ignore-failed-read -cf - | \
	    tar -xf - -C build-deb/src
	cd build-deb/src && dpkg-buildpackage -us -uc -b
	cp build-deb/$(DEB) .

clean:
	rm -rf build build-asan build-fuzz .fuzzbundle build-deb

.PHONY: all asan units deps check demo bench lint clean fuzz fuzzers install deb

-include $(shell find $(O) -name '*.d' 2>/dev/null)
