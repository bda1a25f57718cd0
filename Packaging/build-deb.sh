#!/usr/bin/env bash
# Builds pgswift_<version>_<arch>.deb from release binaries and Packaging/, with dpkg-dev's tools only
# (dpkg-shlibdeps, dpkg-gencontrol, dpkg-deb): no debhelper, no network, no root needed.
#
# Usage: Packaging/build-deb.sh BIN_DIR OUT_DIR
#   BIN_DIR      holds release builds of pgswift and pgswift-worker (make deb: --static-swift-stdlib)
#   DEB_VERSION  the package version (default: <version in Sources/Shared/Util/Version.swift>-1);
#                a later one repackages the same binaries, e.g. to test upgrades
set -euo pipefail

[ $# -eq 2 ] || { sed -n '5,8p' "$0" >&2; exit 2; }
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pkg=$root/Packaging
bindir=$(cd "$1" && pwd)
mkdir -p "$2"
outdir=$(cd "$2" && pwd)

upstream=$(sed -n 's/.*"pgswift-version=\([^"]*\)".*/\1/p' "$root/Sources/Shared/Util/Version.swift")
[ -n "$upstream" ] || { echo "build-deb.sh: no version found in Version.swift" >&2; exit 1; }
version=${DEB_VERSION:-$upstream-1}
arch=$(dpkg --print-architecture)
unitdir=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || true)
unitdir=${unitdir:-/lib/systemd/system}

for b in pgswift pgswift-worker; do
    [ -x "$bindir/$b" ] || { echo "build-deb.sh: $bindir/$b missing: build it first (make deb does)" >&2; exit 1; }
    # A dynamically linked Swift runtime would make the package depend on a toolchain.
    if ldd "$bindir/$b" | grep -q 'libswift'; then
        echo "build-deb.sh: $bindir/$b links the Swift runtime dynamically: build with --static-swift-stdlib" >&2
        exit 1
    fi
done

stage=$(mktemp -d "${TMPDIR:-/tmp}/pgswift-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
umask 022
cd "$stage"
mkdir debian
cp "$pkg/debian/control" debian/control

# The changelog's top entry names the version built: a DEB_VERSION beyond it gets an entry of its own
# (dated as the entry below it, so rebuilding the same tree gives the same package).
top=$(dpkg-parsechangelog -l "$pkg/debian/changelog" -SVersion)
if [ "$version" != "$top" ]; then
    maint=$(dpkg-parsechangelog -l "$pkg/debian/changelog" -SMaintainer)
    date=$(dpkg-parsechangelog -l "$pkg/debian/changelog" -SDate)
    { printf 'pgswift (%s) unstable; urgency=medium\n\n  * Repackaged from %s with the same sources.\n\n -- %s  %s\n\n' \
          "$version" "$top" "$maint" "$date"
      cat "$pkg/debian/changelog"; } > debian/changelog
else
    cp "$pkg/debian/changelog" debian/changelog
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(dpkg-parsechangelog -l debian/changelog -STimestamp)}

t=debian/pgswift
install -d $t/DEBIAN $t/usr/sbin $t/usr/lib/pgswift $t/etc/pgswift $t$unitdir \
    $t/usr/share/man/man8 $t/usr/share/man/man5 $t/usr/share/doc/pgswift \
    $t/usr/share/pgswift/grafana $t/usr/share/pgswift/prometheus
# Stripped as dh_strip does; the Swift metadata sections are allocated and survive --strip-unneeded.
install -m 0755 "$bindir/pgswift" $t/usr/sbin/pgswift
install -m 0755 "$bindir/pgswift-worker" $t/usr/lib/pgswift/pgswift-worker
strip --strip-unneeded --remove-section=.comment --remove-section=.note $t/usr/sbin/pgswift \
    $t/usr/lib/pgswift/pgswift-worker
install -m 0644 "$pkg/debian/pgswift.ini" $t/etc/pgswift/pgswift.ini
install -m 0640 "$pkg/debian/userlist.txt" $t/etc/pgswift/userlist.txt
install -m 0644 "$pkg/systemd/pgswift.service" "$pkg/systemd/pgswift@.service" $t$unitdir/
gzip -9n < "$pkg/man/pgswift.8" > $t/usr/share/man/man8/pgswift.8.gz
gzip -9n < "$pkg/man/pgswift.ini.5" > $t/usr/share/man/man5/pgswift.ini.5.gz
gzip -9n < debian/changelog > $t/usr/share/doc/pgswift/changelog.Debian.gz
install -m 0644 "$pkg/debian/copyright" $t/usr/share/doc/pgswift/copyright
# The Grafana dashboard and Prometheus alert rules (issue 21), for the operator to import.
install -m 0644 "$pkg/grafana/pgswift-dashboard.json" $t/usr/share/pgswift/grafana/
install -m 0644 "$pkg/prometheus/pgswift-alerts.yml" $t/usr/share/pgswift/prometheus/
chmod 0644 $t/usr/share/man/man*/*.gz $t/usr/share/doc/pgswift/*
install -m 0755 "$pkg/debian/postinst" "$pkg/debian/prerm" "$pkg/debian/postrm" $t/DEBIAN/
install -m 0644 "$pkg/debian/conffiles" $t/DEBIAN/conffiles

# Depends from the libraries the binaries really link (libc, libssl, libsystemd...).
dpkg-shlibdeps -Tdebian/pgswift.substvars $t/usr/sbin/pgswift $t/usr/lib/pgswift/pgswift-worker
dpkg-gencontrol -ppgswift -P$t -v"$version" -Tdebian/pgswift.substvars
(cd $t && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
    | xargs -0 md5sum > DEBIAN/md5sums)
chmod 0644 $t/DEBIAN/md5sums
find $t -depth -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch --no-dereference --date="@$SOURCE_DATE_EPOCH"

out=$outdir/pgswift_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build $t "$out" >/dev/null
echo "$out"
