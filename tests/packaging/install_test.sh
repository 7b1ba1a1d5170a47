#!/usr/bin/env bash
# The Debian package, built and installed the way a worker installs it.
#
#   1. cpack builds imapstage_<version>_amd64.deb from BUILD_DIR (the program,
#      its manual pages and completions must be built: tools/package does it);
#   2. its control fields: the version, Depends computed by dpkg-shlibdeps
#      (libetpan, OpenSSL, LMDB, zstd, ...) and adduser for the postinst;
#      its files: the binary, a manual page for every command the binary has,
#      bash and zsh completion, the systemd unit, the examples;
#   3. a clean root is made of the files of the packages the .deb depends on
#      (their whole Depends closure, as installed on this machine) and the
#      Essential ones, with a dpkg database listing them, and nothing else;
#      `dpkg --root ROOT -i` installs the .deb there, running its postinst in
#      the root (chroot in a user namespace: no real root needed), which
#      makes the daemon's system user;
#   4. in the root: ldd finds every library, `imapstage --version` names the
#      archive format and the libraries, and export, verify (offline) and
#      verify --against source --deep work against a private Dovecot (tools/test-server);
#   5. `dpkg --root ROOT -r` removes it again;
#   6. lintian finds nothing but what packaging/lintian-overrides justifies.
#
# Usage: install_test.sh BUILD_DIR     (ctest runs it as packaging.install)
# Environment: IMAPSTAGE_DEB=FILE tests that package instead of building one.
set -euo pipefail
build=$(cd "${1:?usage: install_test.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "$0")/../.." && pwd)

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

work=$(mktemp -d /tmp/imapstage-package.XXXXXX)
server="$work/server"
cleanup() {
  "$here/tools/test-server" stop "$server" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Commands that need root run in a user namespace where we are root (chroot,
# files owned by "root"), or directly when we are root and namespaces are not allowed.
if unshare --user --map-root-user true 2>/dev/null; then
  as_root() { unshare --user --map-root-user "$@"; }
elif [ "$(id -u)" -eq 0 ]; then
  as_root() { "$@"; }
else
  fail "installing into a root needs user namespaces (kernel.unprivileged_userns_clone=1) or root"
fi

# --- 1. the package ---------------------------------------------------------------
if [ -n "${IMAPSTAGE_DEB:-}" ]; then
  deb=$(realpath "$IMAPSTAGE_DEB")
  version=$(dpkg-deb -f "$deb" Version)
else
  step "cpack"
  [ -x "$build/imapstage" ] && [ -f "$build/docs.stamp" ] || fail "$build: build imapstage, docs and pkgdoc first"
  (cd "$build" && cpack -G DEB -B "$work/pkg" >"$work/cpack.log" 2>&1) || { cat "$work/cpack.log" >&2; fail "cpack"; }
  version=$("$build/imapstage" --version | head -1 | cut -d' ' -f2)
  deb="$work/pkg/imapstage_${version}_amd64.deb"
  [ -f "$deb" ] || fail "no $deb (cpack wrote: $(ls "$work/pkg"))"
fi

# --- 2. control fields and files --------------------------------------------------------
step "control fields"
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = imapstage ] || fail "Package: $(field Package)"
[ "$(field Version)" = "$version" ] || fail "Version $(field Version), the binary says $version"
[ "$(field Architecture)" = amd64 ] || fail "Architecture: $(field Architecture)"
depends=$(field Depends)
echo "Depends: $depends"
# Each library the binary links has its package in Depends, with a version from its shlibs/symbols.
for lib in libc6 libetpan20 libssl3 liblmdb0 libzstd1 libgnutls30 libfuse3-3 libstdc\\+\\+6 adduser; do
  echo "$depends" | grep -Eq "(^|, )${lib}( \\(|,|$)" || fail "Depends has no ${lib//\\/}: $depends"
done
echo "$depends" | grep -Eq 'libetpan20 \(>= [0-9]' || fail "Depends names libetpan20 without a version: $depends"
changelog_version=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/doc/imapstage/changelog.gz | gzip -dc |
                    head -1 | sed -n 's/^imapstage (\([^)]*\)).*/\1/p')
[ "$changelog_version" = "$version" ] || fail "packaging/changelog's newest entry is $changelog_version, not $version"

step "files"
dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's|^\./|/|' > "$work/files"
need() { grep -qx "$1" "$work/files" || fail "the package has no $1"; }
need /usr/bin/imapstage
need /usr/share/man/man1/imapstage.1.gz
need /usr/share/bash-completion/completions/imapstage
need /usr/share/zsh/vendor-completions/_imapstage
need /lib/systemd/system/imapstage.service
need /usr/share/doc/imapstage/copyright
need /usr/share/doc/imapstage/README.md.gz
need /usr/share/doc/imapstage/examples/config.toml
need /usr/share/doc/imapstage/examples/accounts.csv
need /usr/share/doc/imapstage/examples/serve.toml

# --- 3. a clean root with the runtime packages only --------------------------------------
step "clean root"
root="$work/root"
mkdir -p "$root"
# The Depends closure (first installed alternative of each), plus the Essential packages.
declare -A seen=()
queue=()
add_dep_list() {  # "a (>= 1), b | c, d:any"
  local item alt name
  IFS=',' read -ra items <<<"$1"
  for item in "${items[@]}"; do
    IFS='|' read -ra alts <<<"$item"
    for alt in "${alts[@]}"; do
      name=$(echo "$alt" | sed 's/([^)]*)//; s/:any//; s/ //g')
      [ -n "$name" ] || continue
      if dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "install ok installed"; then
        [ -n "${seen[$name]:-}" ] || { seen[$name]=1; queue+=("$name"); }
        break
      fi
    done
  done
}
closure() {
  while [ $i -lt ${#queue[@]} ]; do
    add_dep_list "$(dpkg-query -W -f='${Depends}, ${Pre-Depends}' "${queue[$i]}")"
    i=$((i + 1))
  done
}
i=0
add_dep_list "$depends"
closure
# What the Depends line alone brings in: every library the binary loads must come from one of these.
printf '%s\n' "${queue[@]}" > "$work/depends-closure"
add_dep_list "$(dpkg-query -W -f='${Package} ${Essential}\n' | awk '$2 == "yes" {printf "%s, ", $1}')"
closure
echo "${#queue[@]} packages: ${queue[*]}"
# Their files (not directories) as installed, and their entries in a dpkg database of the root.
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc" "$root/tmp" "$root/run" "$root/dev" "$root/proc"
: > "$root/var/lib/dpkg/status"
for p in "${queue[@]}"; do
  dpkg-query -L "$p" | while read -r f; do
    [ -d "$f" ] && continue  # directories (and the usr-merge links, made below) come with their files
    [ -e "$f" ] || [ -L "$f" ] || continue
    echo "$f"
    printf '%s %s\n' "$p" "$(realpath -m "$f")" >> "$work/owners"
  done >> "$work/rootfiles"
  dpkg-query -s "$p" >> "$root/var/lib/dpkg/status"
  echo >> "$root/var/lib/dpkg/status"
  for s in /var/lib/dpkg/info/"$p".* /var/lib/dpkg/info/"$p":amd64.*; do [ -e "$s" ] && cp -a "$s" "$root/var/lib/dpkg/info/"; done
done
: > "$root/var/lib/dpkg/available"
# Debian 12's merged /usr: /bin, /sbin, /lib, /lib64 are links into /usr.
for d in bin sbin lib lib64; do mkdir -p "$root/usr/$d"; ln -s "usr/$d" "$root/$d"; done
sort -u "$work/rootfiles" | sed 's|^/||' > "$work/rootfiles.sorted"
tar -C / --no-recursion -cf - -T "$work/rootfiles.sorted" 2>"$work/tar.log" | tar -C "$root" -xf - 2>>"$work/tar.log" \
  || { cat "$work/tar.log" >&2; fail "copying the packages' files"; }
# What base-passwd's postinst would write.
cp "$root/usr/share/base-passwd/passwd.master" "$root/etc/passwd"
cp "$root/usr/share/base-passwd/group.master" "$root/etc/group"
chmod 1777 "$root/tmp"
echo "root: $(du -sh "$root" | cut -f1)"

# --- install with dpkg --------------------------------------------------------------------------
step "dpkg --root -i"
cp "$deb" "$root/tmp/"
# dpkg runs outside the root and chroots into it for the maintainer scripts.
as_root env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg --root="$root" \
  -i "$root/tmp/$(basename "$deb")" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i"; }
grep -q '^Status: install ok installed' <(dpkg-query --admindir="$root/var/lib/dpkg" -s imapstage) || fail "imapstage not installed in the root"
grep -q '^imapstage:' "$root/etc/passwd" || fail "the postinst made no imapstage user"
grep -q '^imapstage:' "$root/etc/group" || fail "the postinst made no imapstage group"
in_root() { as_root chroot "$root" "$@"; }

# --- 4. run it in the root --------------------------------------------------------------------------
step "ldd in the root"
in_root /usr/bin/ldd /usr/bin/imapstage > "$work/ldd" || { cat "$work/ldd" >&2; fail "ldd"; }
! grep -q 'not found' "$work/ldd" || { cat "$work/ldd" >&2; fail "libraries missing from the root"; }
# Each library it loads belongs to a package of the Depends closure (not only to an Essential one).
for lib in $(awk '$2 == "=>" {print $3} $1 ~ /^\// {print $1}' "$work/ldd"); do
  real=$(realpath -m "$root$lib"); real=${real#"$root"}
  owner=$(awk -v f="$real" '$2 == f {print $1; exit}' "$work/owners")
  [ -n "$owner" ] || fail "$lib ($real) belongs to no package of the root"
  grep -qx "$owner" "$work/depends-closure" || fail "$lib comes from $owner, which the Depends line does not bring in"
  echo "$lib: $owner"
done

step "imapstage --version in the root"
in_root /usr/bin/imapstage --version | tee "$work/version"
grep -qx "imapstage $version" "$work/version" || fail "no program version"
grep -Eq '^archive format [0-9]+ ' "$work/version" || fail "no archive format version"
for lib in libetpan GnuTLS OpenSSL LMDB zstd; do
  grep -Eq "(^|, )$lib [0-9]+\\.[0-9]+" "$work/version" || fail "no $lib version"
done
# A manual page for every command the installed program lists in --help, and none for a command it does not.
commands=$(in_root /usr/bin/imapstage --help | awk '/^Subcommands:/ {on = 1; next} on && /^  [a-z]/ {print $1}')
[ -n "$commands" ] || fail "no commands in imapstage --help"
for c in $commands; do
  need "/usr/share/man/man1/imapstage-$c.1.gz"
  in_root /usr/bin/imapstage "$c" --help >/dev/null || fail "imapstage $c --help"
done
pages=$(grep -c '^/usr/share/man/man1/imapstage-.*\.1\.gz$' "$work/files")
[ "$pages" -eq "$(echo "$commands" | wc -l)" ] || fail "$pages command pages for $(echo "$commands" | wc -l) commands"

step "export and verify in the root against a private Dovecot"
"$here/tools/test-server" start "$server" --users alice >/dev/null
info() { python3 -c "import json; d = json.load(open('$server/server.json')); print($1)"; }
host=$(info 'd["host"]'); port=$(info 'd["imaps_port"]')
cp "$(info 'd["ca_file"]')" "$root/tmp/ca.pem"
(umask 077; info 'd["users"]["alice"]' > "$root/tmp/alice.pw")
server_args=(--host "$host" --port "$port" --ca-file /tmp/ca.pem --user alice --password-file /tmp/alice.pw)
in_root /usr/bin/imapstage export --archive /tmp/archive "${server_args[@]}" --quiet \
  || fail "export in the root"
in_root /usr/bin/imapstage verify --archive /tmp/archive --quiet --report /tmp/verify.json || fail "verify in the root"
in_root /usr/bin/imapstage verify --archive /tmp/archive --against source --deep "${server_args[@]}" --quiet \
  --report /tmp/verify-source.json || fail "verify --against source in the root"
python3 - "$root/tmp/verify-source.json" <<'EOF' || fail "the source report"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["equal"] is True and r["deep"] is True and r["differences"] == 0, r
compared = sum(f["hashes_compared"] for f in r["folders"])
assert compared > 0 and compared == sum(f["server_messages"] for f in r["folders"]), r
print(f"verify --against source --deep in the root: {len(r['folders'])} folders, {compared} messages equal")
EOF
in_root /usr/bin/imapstage ls --archive /tmp/archive "alice@$host" | grep -q INBOX || fail "ls shows no INBOX"

# --- 5. remove ---------------------------------------------------------------------------------
step "dpkg --root -r"
as_root env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg --root="$root" -r imapstage >>"$work/dpkg.log" 2>&1 \
  || { cat "$work/dpkg.log" >&2; fail "dpkg -r"; }
[ ! -e "$root/usr/bin/imapstage" ] || fail "dpkg -r left /usr/bin/imapstage"

# --- 6. lintian ---------------------------------------------------------------------------------
step "lintian"
command -v lintian >/dev/null || fail "no lintian (tools/setup installs it)"
# --fail-on warning: an error or warning not overridden fails; info tags are shown.
lintian --fail-on error,warning --info --display-info --tag-display-limit 0 "$deb" | tee "$work/lintian" \
  || fail "lintian"
echo "PASS"
