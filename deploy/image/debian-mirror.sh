# Sourced by deploy/image/build.sh and tests/systemd/run.sh (both debootstrap bookworm).
# debian_mirror: the first Debian archive URI apt is configured with for bookworm (deb822
# .sources or one-line .list format), else deb.debian.org.
debian_mirror() {
	local uri
	uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '
		/^URIs:/ { u = $2 } /^Suites:/ && u && $0 ~ /bookworm( |$)/ { print u; exit }')
	[ -n "$uri" ] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }')
	echo "${uri:-http://deb.debian.org/debian}"
}
