#!/bin/sh
# FPS_SQUID_BIN for (15)'s instruction count (lib/reportsprice.py): the serving Squid runs under
# callgrind, writing FPS_CALLGRIND_OUT.<pid>; `squid -k parse` and `-k` signals run plain.
# Callgrind writes its file when Squid exits, after Squid has dropped root for its effective user
# (Debian's "proxy"): the file is made here and given to that user before valgrind starts ($$ is
# valgrind's pid after exec).
squid=${FPS_REAL_SQUID_BIN:-/usr/sbin/squid}
for a in "$@"; do
	[ "$a" = "-k" ] && exec "$squid" "$@"
done
out="$FPS_CALLGRIND_OUT.$$"
: >"$out" && chown proxy "$out" || exit 1
exec valgrind --tool=callgrind --callgrind-out-file="$out" "$squid" "$@"
